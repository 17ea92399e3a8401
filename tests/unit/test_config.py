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
