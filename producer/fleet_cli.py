"""Fleet commands: ``submit grids|heatmaps``, ``status``, ``fetch``, ``worker``.

Mounted into the main CLI by ``register(app)`` (``producer/cli.py`` calls it) and usable on its
own as ``fleet_app`` / ``python -m convatlas.producer.fleet_cli``. Configuration comes from the environment
(``CONVATLAS_BROKER_URL``, ``CONVATLAS_S3_*``, AWS credentials). Imports are lazy: ``--help``
loads neither TensorFlow nor boto3. Every request is planned and validated before anything is
uploaded or queued; an invalid one exits with code 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from convatlas.producer.cli_errors import fail
from convatlas.producer.options import heatmap_options, pattern_options, pattern_params

if TYPE_CHECKING:
    from convatlas.producer.plans.plan import Plan
    from convatlas.producer.plans.spool import SpooledPlan
    from convatlas.shared.config import Settings

fleet_app = typer.Typer(
    help="Run on a Celery fleet: submit, status, fetch, worker.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
submit_app = typer.Typer(
    help="Plan, upload and queue a run (only what is not already in storage).",
    no_args_is_help=True,
)

WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the run with a progress bar.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds --wait waits at most.")]
PrecisionOpt = Annotated[str | None, typer.Option(help="Network precision: float32, or bfloat16 (about 2x faster on workers with AVX512_BF16/AMX). Default CONVATLAS_PRECISION, else float32.")]


def _settings(need_broker: bool = True) -> Settings:
    from convatlas.shared.config import Settings

    s = Settings.from_env()
    if need_broker and not s.broker_url:
        fail("CONVATLAS_BROKER_URL is not set (e.g. redis://:PASSWORD@host:6379/0)")
    return s


def _storage(settings: Settings, create: bool = False) -> Any:
    from convatlas.shared.storage import storage_from_settings

    return storage_from_settings(settings, create_bucket=create)


@contextlib.contextmanager
def _submission_errors(settings: Settings) -> Iterator[None]:
    """Storage, broker and progress-store failures while submitting, as one-line errors:
    exit 1 for an unreachable service, 2 for a request that cannot be run (no Redis)."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from convatlas.shared.config import redact_url
    from convatlas.shared.storage import StorageError

    try:
        yield
    except StorageError as exc:
        fail(f"storage: {exc}", 1)
    except (OperationalError, RedisError) as exc:
        from convatlas.producer.submit import broker_refused

        what = "refused the request" if broker_refused(exc) else "unreachable"
        fail(f"broker {redact_url(settings.broker_url)} {what}: {redact_url(str(exc))}", 1)
    except ValueError as exc:  # no Redis to count the run's progress in
        fail(str(exc))


def _submit(plan: Plan | SpooledPlan, settings: Settings, wait: bool, timeout: float) -> None:

    from convatlas.producer.submit import run_counter, submit_plan, wait_for_run
    from convatlas.shared.report import summary
    from convatlas.workers.config import make_app

    with _submission_errors(settings):
        storage = _storage(settings, create=True)
        app = make_app(settings)
        res = submit_plan(plan, storage, app, settings)
    typer.echo(
        f"run {res.run_id}: {res.queued_jobs} jobs queued ({res.queued_tasks} tasks), "
        f"{res.already_done} already in storage, {res.uploaded} photos uploaded"
    )
    if not wait:
        typer.echo(f"  follow it with: convatlas status {res.run_id}")
        return
    try:
        report = wait_for_run(storage, res.run_id, timeout, progress=True,
                              counter=run_counter(app, settings, res.run_id))
    except TimeoutError as exc:
        fail(str(exc), 1)
    typer.echo(summary(report, storage.describe()))
    if report["counts"]["failed"] or not report["complete"]:
        raise typer.Exit(1)


@submit_app.command("grids")
@pattern_options
def submit_grids(
    pattern: Mapping[str, Any],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name or .keras/.h5 file.")] = "vgg16-hed",
    layers: Annotated[str, typer.Option(help="Comma-separated layer names, or 'all'.")] = "block1_conv1",
    filters: Annotated[str, typer.Option(help="'0:64', '0,5,9' or 'all' (pages of 64).")] = "0:64",
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
) -> None:
    """Queue filter-pattern grids: one task per filter; a page is reduced when its last tile has an outcome."""
    from convatlas.producer.plans.grids import plan_grids
    from convatlas.producer.plans.plan import PlanError

    settings = _settings()
    try:
        params = pattern_params(pattern, settings)
        plan = plan_grids(model, layers, filters, params, settings)
    except (PlanError, ValueError) as exc:
        fail(str(exc))
    _submit(plan, settings, wait, timeout)


@submit_app.command("heatmaps")
@heatmap_options
def submit_heatmaps(
    cam: Mapping[str, Any],
    paths: Annotated[list[str], typer.Argument(help="Image files and/or folders.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name or .keras/.h5 file.")] = "efficientnet-lite0",
    class_: Annotated[str | None, typer.Option("--class", "-c", help="Class index, WordNet id or name; default top-1.")] = None,
    layer: Annotated[str | None, typer.Option(help="Target conv layer; default the last feature map.")] = None,
    precision: PrecisionOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
) -> None:
    """Queue Grad-CAM heatmaps: photos are uploaded once by content hash, one task per photo.

    Streamed: the folder is walked and hashed into a local spool file, then uploaded, written
    to the manifest and queued a shard at a time, so memory does not grow with the folder."""
    from convatlas.producer.plans.plan import PlanError
    from convatlas.producer.plans.spool import spool_heatmaps

    settings = _settings()
    try:
        plan = spool_heatmaps(paths, model, class_, layer, settings,
                              precision or settings.precision, dict(cam))
    except PlanError as exc:
        fail(str(exc))
    try:
        for name, reason in plan.iter_rejected():
            typer.echo(f"  not submitted: {name}: {reason}", err=True)
        _submit(plan, settings, wait, timeout)
    finally:
        plan.close()


@submit_app.command("report-card")
def submit_report_card(
    paths: Annotated[list[str], typer.Argument(help="Photo files and/or folders.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name or .keras/.h5 file.")] = "efficientnet-lite0",
    sample: Annotated[int, typer.Option(help="Photos in the sample (the smallest sha256s).")] = 16,
    methods: Annotated[str, typer.Option(help="CAM methods, comma-separated, or 'all'.")] = "all",
    layers: Annotated[str, typer.Option(help="Candidate layers, comma-separated, or 'auto'.")] = "auto",
    steps: Annotated[int, typer.Option(help="Deletion / insertion steps.")] = 20,
    road_percentiles: Annotated[str, typer.Option(help="ROAD's percentiles, comma-separated.")] = "10,20,30,40,50,60,70,80,90",
    randomise_layers: Annotated[int, typer.Option(help="Randomisation check: top weighted layers re-drawn.")] = 3,
    precision: PrecisionOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
) -> None:
    """Queue a CAM report card: one task per sampled photo, then one that ranks them.

    The ranking task writes card.json, index.html and the recommendation (`convatlas fetch RUN
    OUT`, then `heatmaps --method auto --layer auto --out OUT`). The same request is the same
    card."""
    from convatlas.producer.plans.plan import PlanError
    from convatlas.producer.plans.report_card import card_request, plan_report_card

    settings = _settings()
    try:
        request = card_request(model, methods, layers, sample, steps, road_percentiles,
                               randomise_layers, precision or settings.precision)
        plan = plan_report_card(paths, request, settings)
    except PlanError as exc:
        fail(str(exc))
    for name, reason in plan.rejected:
        typer.echo(f"  not submitted: {name}: {reason}", err=True)
    _submit(plan, settings, wait, timeout)
    if wait:  # the jobs are done; the card is written by the run's post-run step
        from convatlas.shared.jobs.report_card import wait_for_card

        try:
            card = wait_for_card(_storage(settings), plan.run_id, timeout)
        except TimeoutError as exc:
            fail(str(exc), 1)
        if card["status"] != "done":
            fail(f"report card: {card['status']}", 1)
        rec = card["recommended"]
        typer.echo(f"report card {card['key']}: recommended {rec['method']} @ {rec['layer']} "
                   f"→ {card['index']} (convatlas fetch {plan.run_id} OUT)")


@submit_app.command("examples")
def submit_examples(
    paths: Annotated[list[str], typer.Argument(help="Photo files and/or folders.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name or .keras/.h5 file.")] = "vgg16-hed",
    layers: Annotated[str, typer.Option(help="Comma-separated layer names, or 'all'.")] = "block5_conv1",
    top: Annotated[int, typer.Option(help="Examples kept per unit (9: a 3×3 mosaic).")] = 9,
    batch: Annotated[int, typer.Option(help="Photos per map task (one forward pass each).")] = 32,
    side: Annotated[int | None, typer.Option(help="Model input side; default the model's.")] = None,
    precision: PrecisionOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
) -> None:
    """Queue dataset examples: map tasks per batch of photos, then one reduce per run.

    A map task per batch of photos (only photos not seen before for these layers), then one
    reduce per run merging every layer's candidates into storage."""

    from convatlas.producer.plans.examples import plan_examples
    from convatlas.producer.plans.plan import PlanError
    from convatlas.producer.run_examples import submit_examples as submit
    from convatlas.producer.run_examples import wait_for_examples
    from convatlas.producer.submit import run_counter, wait_for_run
    from convatlas.shared.report import summary
    from convatlas.shared.storage import StorageError
    from convatlas.workers.config import make_app

    settings = _settings()
    try:
        storage = _storage(settings, create=True)
        plan = plan_examples(paths, model, layers, top, settings, storage,
                             precision or settings.precision, batch, side)
    except PlanError as exc:
        fail(str(exc))
    except StorageError as exc:
        fail(f"storage: {exc}", 1)
    for name, reason in plan.rejected:
        typer.echo(f"  not submitted: {name}: {reason}", err=True)
    with _submission_errors(settings):
        app = make_app(settings)
        res = submit(plan, storage, app, settings)
    typer.echo(f"run {res.run_id}: {res.queued_jobs} map jobs queued, {res.already_done} already "
               f"in storage, {res.uploaded} photos uploaded; then one reduce of "
               f"{len(plan.reduces)} layers")
    if not wait:
        typer.echo(f"  follow it with: convatlas status {res.run_id}")
        return
    try:
        report = wait_for_run(storage, res.run_id, timeout, progress=True,
                              counter=run_counter(app, settings, res.run_id))
        merged = wait_for_examples(storage, res.run_id, timeout)
    except TimeoutError as exc:
        fail(str(exc), 1)
    typer.echo(summary(report, storage.describe()))
    failed = [f for j in report["jobs"] for f in j.get("failed_photos") or []]
    for f in failed:
        typer.echo(f"  FAILED {f['name'] or f['image_sha256']}: {f['error']}")
    for row in merged["layers"]:
        typer.echo(f"  {row['layer']}: {row['photos']} photos merged in total → {row['pages_png'][0]}")
    if failed or report["counts"]["failed"]:
        raise typer.Exit(1)


@submit_app.command("atlas")
def submit_atlas(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (the workers load it by name).")] = "vgg16-hed",
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 3600.0,
) -> None:
    """Build a model's atlas in the fleet, into the bucket under atlas/<model>/.

    A worker reads the bucket's results (grids, examples, heatmaps of this model) and writes
    the static site into the bucket under atlas/<model>/."""
    from convatlas.producer.submit import check_broker, stop_listening
    from convatlas.shared.atlas import site_prefix, summary_key
    from convatlas.shared.jobs import TASK_NAMES
    from convatlas.shared.jobs.common import read_json
    from convatlas.shared.models.registry import UnknownModel, get_spec
    from convatlas.workers.config import make_app

    settings = _settings()
    try:
        get_spec(model)
    except UnknownModel as exc:
        fail(str(exc))
    with _submission_errors(settings):
        storage = _storage(settings, create=True)
        app = make_app(settings)
        check_broker(app)
        storage.delete(summary_key(model))  # a stale summary must not end --wait early
        app.send_task(TASK_NAMES["atlas"], args=(model,))
        stop_listening(app)
    where = f"{storage.describe()} key {site_prefix(model)}/index.html"
    typer.echo(f"atlas of {model} queued → {where}")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while (done := read_json(storage, summary_key(model))) is None:
        if time.monotonic() > deadline:
            fail(f"atlas of {model}: not built after {timeout:.0f} s", 1)
        time.sleep(1.0)
    if done.get("error"):
        fail(f"atlas of {model} failed: {done['error']}", 1)
    typer.echo(f"atlas of {model}: {done['layers']} layers, {done['units']} unit pages, "
               f"{done['photos']} photo pages, {done['files']} files in {done['seconds']:.1f} s")


def status(
    run: Annotated[str, typer.Argument(help="Run id printed by submit.")],
    details: Annotated[bool, typer.Option(help="While running: rebuild every job's state from storage (lists the run's folders; slow for big runs).")] = False,
) -> None:
    """Progress of a run: its report when finished, else its counters.

    The counters are O(1); with --details every job's state is rebuilt from storage (failures
    with reasons, output keys)."""
    from convatlas.producer.submit import read_report
    from convatlas.shared.manifest import job_count, load_manifest
    from convatlas.shared.progress import RunProgress, progress_client
    from convatlas.shared.report import build_report, summary
    from convatlas.shared.storage import ObjectNotFound, StorageError

    settings = _settings(need_broker=False)
    storage = _storage(settings)
    try:
        report = read_report(storage, run)
        if report is not None:
            typer.echo(summary(report, storage.describe()))
            typer.echo("  finished (report written)")
            return
        manifest = load_manifest(storage, run)
        client = progress_client(settings)
        progress = RunProgress(client, run) if client is not None else None
        snap = progress.snapshot() if progress is not None else None
        if progress is not None and snap is not None and not details:
            total = job_count(manifest)
            typer.echo(f"run {run} ({manifest['kind']}, {manifest['model']}): {snap.done} of "
                       f"{total} jobs have an outcome; requeued {snap.requeued}, duplicates "
                       f"{snap.duplicates}; last outcome {progress.now() - snap.last:.0f} s ago")
        else:
            typer.echo(summary(build_report(storage, manifest), storage.describe()))
    except ObjectNotFound:
        fail(f"no run {run!r} in {storage.describe()}", 1)
    except (StorageError, ValueError) as exc:
        fail(str(exc), 1)
    typer.echo("  still running or not finished")


def fetch(
    run: Annotated[str, typer.Argument(help="Run id.")],
    dest: Annotated[Path, typer.Argument(help="Folder to download into.")],
) -> None:
    """Download a run's outputs, report and a gallery with relative links into DEST."""
    from convatlas.producer.submit import fetch_run
    from convatlas.shared.storage import ObjectNotFound, StorageError

    storage = _storage(_settings(need_broker=False))
    try:
        n, report = fetch_run(storage, run, dest)
    except ObjectNotFound:
        fail(f"no run {run!r} in {storage.describe()}", 1)
    except (StorageError, ValueError) as exc:
        fail(str(exc), 1)
    typer.echo(f"{n} files in {dest}; gallery: {dest / 'runs' / run / 'index.html'}")
    if not report["complete"]:
        typer.echo("  the run is not complete yet: fetch again later for the rest")


def worker(
    concurrency: Annotated[int | None, typer.Option(help="Task threads; default 2 × CONVATLAS_MAX_BATCH, so the next batch gathers while one runs.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    hostname: Annotated[str | None, typer.Option(help="Node name; default convatlas-<pid>@<host>.")] = None,
) -> None:
    """Start a Celery worker (threads pool, task events on for Flower); replaces this process."""
    from convatlas.producer.quiet import restore
    from convatlas.workers.config import worker_argv

    argv = worker_argv(_settings(), concurrency=concurrency, loglevel=loglevel, hostname=hostname)
    restore()  # the worker's stderr is its log: never exec behind the filter's pipe
    os.execv(sys.executable, argv)


def register(app: typer.Typer) -> None:
    """Add ``submit`` (grids, heatmaps), ``status``, ``fetch`` and ``worker`` to ``app``."""
    app.add_typer(submit_app, name="submit")
    app.command("status")(status)
    app.command("fetch")(fetch)
    app.command("worker")(worker)


register(fleet_app)

if __name__ == "__main__":
    fleet_app()
