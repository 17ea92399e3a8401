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
