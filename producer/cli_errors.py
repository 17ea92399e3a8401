"""How a command stops on an error, for every CLI module: one red ``error:`` line on stderr, then
the exit code (2: a request that cannot run, 1: a service or a run that failed)."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
