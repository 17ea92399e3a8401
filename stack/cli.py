"""``convatlas stack up|down|env``: the local fleet (Redis, SeaweedFS S3, workers, Flower).

Imports of the stack itself happen inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from convatlas.stack.supervisor import LocalStack

stack_app = typer.Typer(
    help="A local fleet on 127.0.0.1: Redis, SeaweedFS S3, Celery workers and Flower, "
    "with random passwords.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DirOpt = Annotated[Path, typer.Option("--dir", help="Where the stack keeps data, logs, pids and stack.env.")]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@stack_app.command()
def up(
    dir: DirOpt = Path(".stack"),
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    concurrency: Annotated[int | None, typer.Option(help="Threads per worker; default 2 × CONVATLAS_MAX_BATCH, so the next batch gathers while one runs.")] = None,
    flower_port: Annotated[int | None, typer.Option(help="Flower's port; default a free one.")] = None,
    detach: Annotated[bool, typer.Option("--detach/--foreground", help="Return once up, or stay and stop everything on Ctrl-C.")] = False,
    tls: Annotated[bool, typer.Option("--tls/--no-tls", help="Redis and S3 serve TLS only (rediss://, https), with a private CA in DIR/tls that stack.env's CONVATLAS_TLS_CA names.")] = False,
) -> None:
    """Start the stack and print its addresses (never its passwords)."""
    from convatlas.stack.servers import ServerError
    from convatlas.stack.supervisor import ENV_FILE, LocalStack, StackError

    stack = LocalStack(dir, workers=workers, concurrency=concurrency,
                       ports={"flower": flower_port} if flower_port else None, tls=tls)
    signal.signal(signal.SIGTERM, _interrupt)
    t0 = time.monotonic()
    try:
        stack.start()
    except (StackError, ServerError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted; stopped", err=True)
        raise typer.Exit(130) from None
    urls = stack.urls()
    where = f" --dir {dir}" if dir != Path(".stack") else ""
    typer.echo(
        f"convatlas stack up in {time.monotonic() - t0:.1f} s: {workers} worker(s) x {stack.threads} threads\n"
        f"  Flower: {urls['flower']}  (user {stack.flower_user}; password: "
        f"convatlas stack env{where} | grep FLOWER)\n"
        f"  S3:     {urls['s3']}  bucket convatlas\n"
        f"  Redis:  {urls['broker']}\n"
        f"  logs:   {stack.logs}/\n"
        f"  env:    source {stack.dir / ENV_FILE}   or   eval \"$(convatlas stack env{where})\""
    )
    if detach:
        stack.detach()
        typer.echo(f"  stop:   convatlas stack down{where}")
        return
    typer.echo("  stop:   Ctrl-C")
    _watch(stack)


def _watch(stack: LocalStack) -> None:
    """Wait for Ctrl-C (or SIGTERM), reporting parts that die meanwhile; then stop all."""
    reported: set[str] = set()
    try:
        while True:
            for name in stack.restart_workers():  # as compose's restart: unless-stopped
                typer.secho(f"warning: {name} exited; started a fresh one",
                            fg=typer.colors.YELLOW, err=True)
            for name in sorted(set(stack.dead()) - reported):
                typer.secho(f"warning: {name} exited; see {stack.logs}/{name}.log",
                            fg=typer.colors.YELLOW, err=True)
                reported.add(name)
            time.sleep(1)
    except KeyboardInterrupt:
        typer.echo("stopping...", err=True)
    finally:
        # A second Ctrl-C must not leave half the stack running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
    typer.echo("stopped", err=True)


@stack_app.command()
def down(dir: DirOpt = Path(".stack")) -> None:
    """Stop a stack started with `up --detach` (workers get a warm shutdown)."""
    from convatlas.stack.supervisor import LocalStack, StackError

    try:
        stack = LocalStack.from_dir(dir)
    except StackError as e:
        typer.echo(f"nothing to stop: {e}")
        return
    stack.stop()
    typer.echo(f"stopped the stack in {stack.dir}")


@stack_app.command()
def env(dir: DirOpt = Path(".stack")) -> None:
    """Print export lines for a client shell: eval "$(convatlas stack env)".

    WARNING: prints secrets (Redis password in the broker URL, S3 keys, Flower password).
    """
    from convatlas.stack.supervisor import ENV_FILE, read_env

    path = Path(dir) / ENV_FILE
    if not read_env(path):
        typer.secho(f"error: no stack env at {path}: is the stack up?", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(path.read_text(), nl=False)


@stack_app.command("tls-files")
def tls_files(
    dir: Annotated[Path, typer.Argument(help="Folder for ca.pem, server.pem and server.key (0600).")] = Path("tls"),
    host: Annotated[list[str] | None, typer.Option("--host", help="A name or IP the servers answer to; repeat. Default: the compose services, redis and s3, and loopback.")] = None,
) -> None:
    """Make a private CA and a server certificate it signs, for TLS on compose without a CA of your own.

    For docker-compose.tls.yml; needs trustme (the dev extra)."""
    from convatlas.stack.tls import LOOPBACK_HOSTS, make_tls

    hosts = tuple(host) if host else ("redis", "s3", *LOOPBACK_HOSTS)
    files = make_tls(dir, hosts)
    typer.echo(f"CA {files.ca}, certificate {files.cert} for {', '.join(hosts)}, key {files.key}")


if __name__ == "__main__":
    stack_app()
