"""Configuration: every environment variable the code reads is documented in the README table."""

from __future__ import annotations

import re
from pathlib import Path

from convatlas.shared.config import Settings

REPO = Path(__file__).resolve().parents[2]


def test_every_variable_is_in_the_readme_table() -> None:
    code = (REPO / "shared" / "config.py").read_text()
    read = set(re.findall(r'_env\("(CONVATLAS_[A-Z0-9_]+)"', code))
    table = {
        name
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("| `CONVATLAS_")
        for name in re.findall(r"`(CONVATLAS_[A-Z0-9_]+)`", line)
    }
    assert "CONVATLAS_PRECISION" in read
    assert read <= table, sorted(read - table)


def test_precision_default_and_override(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("CONVATLAS_PRECISION", raising=False)
    assert Settings.from_env().precision == "float32"
    monkeypatch.setenv("CONVATLAS_PRECISION", "bfloat16")
    assert Settings.from_env().precision == "bfloat16"


def test_worker_concurrency_has_one_default(monkeypatch) -> None:  # noqa: ANN001
    from convatlas.workers.config import default_concurrency, worker_argv

    monkeypatch.delenv("CONVATLAS_WORKER_CONCURRENCY", raising=False)
    monkeypatch.setenv("CONVATLAS_MAX_BATCH", "16")
    assert default_concurrency(Settings.from_env()) == 32
    monkeypatch.setenv("CONVATLAS_WORKER_CONCURRENCY", "")  # compose's unset variable
    assert default_concurrency(Settings.from_env()) == 32
    monkeypatch.setenv("CONVATLAS_WORKER_CONCURRENCY", "5")
    argv = worker_argv(Settings.from_env())
    assert argv[argv.index("--concurrency") + 1] == "5"
