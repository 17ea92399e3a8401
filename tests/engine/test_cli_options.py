"""Both grid commands take the same pattern options, one per PatternParams field."""

from __future__ import annotations

from dataclasses import fields

import typer.main

from convatlas.producer.cli import app
from convatlas.producer.options import PATTERN_OPTIONS, pattern_params
from convatlas.shared.config import Settings
from convatlas.shared.engine.patterns import PatternParams


def _options(path: list[str]) -> dict[str, object]:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return {p.name: p.default for p in cmd.params}


def test_every_pattern_field_has_an_option() -> None:
    assert set(PATTERN_OPTIONS) == {f.name for f in fields(PatternParams)}


def test_grids_and_submit_grids_share_the_pattern_options() -> None:
    local, fleet = _options(["grids"]), _options(["submit", "grids"])
    for name in PATTERN_OPTIONS:
        assert name in local and name in fleet, name
        assert local[name] == fleet[name], name


def test_cli_defaults_are_the_book_defaults() -> None:
    pattern = {name: default for name, (_, default, _) in PATTERN_OPTIONS.items()}
    assert pattern_params(pattern, Settings()) == PatternParams()
    bf = pattern_params({**pattern, "precision": None}, Settings(precision="bfloat16"))
    assert bf.precision == "bfloat16"


def test_lucid_style_runs_from_the_cli_and_is_kept_apart(tmp_path) -> None:  # noqa: ANN001
    import json
    import os
    import subprocess
    import sys

    def grids(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "convatlas.producer.cli", "grids", "--layers", "block1_conv1",
             "--filters", "0:2", "--size", "32", "--steps", "3", "--out", str(tmp_path), "-q",
             *extra], capture_output=True, text=True, timeout=600, env=dict(os.environ))

    book, lucid = grids(), grids("--style", "lucid")
    assert book.returncode == 0 and lucid.returncode == 0, book.stderr + lucid.stderr
    records = sorted(tmp_path.glob("results/**/f0000.json"))
    assert len(records) == 2  # two styles, two keys
    styles = {json.loads(r.read_text())["style"] for r in records}
    assert styles == {"book", "lucid"}
    reports = [json.loads(p.read_text()) for p in tmp_path.glob("runs/*/report.json")]
    assert {g["style"] for r in reports for g in r["grids"]} == {"book", "lucid"}
    bad = grids("--style", "van-gogh")
    assert bad.returncode == 2 and "style" in bad.stderr
