"""`convatlas --help`: every command's one-line summary is one paragraph without hard breaks."""

from __future__ import annotations

import typer.main

from convatlas.producer.cli import app


def _commands(group: object, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for name, cmd in getattr(group, "commands", {}).items():
        out[prefix + name] = cmd
        out.update(_commands(cmd, f"{prefix}{name} "))
    return out


def test_command_summaries_have_no_hard_line_breaks() -> None:
    commands = _commands(typer.main.get_command(app))
    assert {"grids", "heatmaps", "examples", "atlas", "status", "submit"} <= set(commands)
    for name, cmd in commands.items():
        summary = (getattr(cmd, "help", None) or "").strip().split("\n\n")[0]
        assert summary, f"{name} has no help"
        assert "\n" not in summary, f"{name}: summary broken over lines: {summary!r}"
