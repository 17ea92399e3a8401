"""The ``convatlas`` command line.

Local mode (``grids``, ``heatmaps``) runs the same job functions as the workers, in this process.
Fleet mode (``submit``, ``status``, ``fetch``, ``worker``, ``stack``) goes through Redis, Celery
and S3. Heavy imports (TensorFlow) happen inside commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from convatlas.producer.cli_errors import fail
from convatlas.producer.options import heatmap_options, pattern_options, pattern_params

app = typer.Typer(
    help="Show what convolutional networks see: filter-pattern grids (book and Lucid styles), "
    "the CAM family's heatmaps with faithfulness metrics, dataset examples per unit and a "
    "browsable atlas of a model; in this process or on a Celery fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name: vgg16-hed, efficientnet-lite0, any keras.applications ImageNet CNN (resnet50, mobilenetv2, efficientnet-b0, convnext-tiny, …; `convatlas models` lists them all), or a .keras/.h5 file[#preprocessing].")]
WeightsOpt = Annotated[Path | None, typer.Option("--weights", help="vgg16 only: ImageNet weights .h5 (same as CONVATLAS_VGG16_WEIGHTS).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (results, runs/<id>/report.json, index.html).")]
PrecisionOpt = Annotated[str | None, typer.Option(help="Network precision: float32, or bfloat16 (about 2x faster on CPUs with AVX512_BF16/AMX, slower elsewhere; results differ slightly). Default CONVATLAS_PRECISION, else float32.")]


NO_FILTER = ("worker", "stack")  # long-running processes whose stderr is the operator's log


@app.callback()
def main_options(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show TensorFlow's own log lines too (also CONVATLAS_LOG_LEVEL=info).")] = False,
    backend: Annotated[str | None, typer.Option(help="Tensor framework of the engines: tensorflow or jax (also CONVATLAS_BACKEND; default tensorflow).")] = None,
) -> None:
    """Show what convolutional networks see, in this process or on a Celery fleet."""
    from convatlas.producer.quiet import quiet
    from convatlas.shared.backend_select import BackendError, select_backend

    try:  # before any command imports Keras, which reads its backend once
        select_backend(backend)
    except BackendError as exc:
        fail(str(exc))

    if ctx.invoked_subcommand not in NO_FILTER:
        try:
            quiet(verbose)
        except ValueError as exc:
            fail(str(exc))


def use_weights(weights: Path | None) -> None:
    """``--weights`` is the command-line spelling of CONVATLAS_VGG16_WEIGHTS."""
    if weights is not None:
        if not weights.is_file():
            fail(f"weights file not found: {weights}")
        os.environ["CONVATLAS_VGG16_WEIGHTS"] = str(weights.resolve())


def bf16_note() -> str:
    """Whether --precision bfloat16 is fast on this machine's CPU (it is slow where emulated)."""
    from convatlas.shared.cpu import native_bfloat16

    if native_bfloat16():
        return "bfloat16 is native on this CPU (AVX512_BF16/AMX): --precision bfloat16 is about 2x faster"
    return "this CPU has no native bfloat16: --precision bfloat16 would be emulated and slow here"


def warn_if_slow(precision: str) -> None:
    from convatlas.shared.cpu import native_bfloat16

    if precision == "bfloat16" and not native_bfloat16():
        typer.secho(f"warning: {bf16_note()}", fg=typer.colors.YELLOW, err=True)


@app.command()
def models(
    names: Annotated[list[str] | None, typer.Argument(help="Models to list (all when none), or `fetch NAME…`: put their ImageNet weights in the bucket for the fleet.")] = None,
    classes: Annotated[bool, typer.Option(help="Also list the 1000 ImageNet class names.")] = False,
    layers: Annotated[bool, typer.Option(help="List every conv layer with its filter count.")] = True,
    from_file: Annotated[Path | None, typer.Option("--from", help="fetch: take this weights file instead of downloading (checked against the hash Keras publishes).")] = None,
) -> None:
    """List the models: offline availability, what each can do, conv layers and filter counts."""
    from convatlas.shared.config import Settings
    from convatlas.shared.models import listing
    from convatlas.shared.models.registry import UnknownModel
    from convatlas.shared.models.zoo import WeightsUnavailable
    from convatlas.shared.storage import StorageError

    settings = Settings.from_env()
    names = names or []
    try:
        if names[:1] == ["fetch"]:
            for line in listing.fetch(names[1:], settings, from_file):
                typer.echo(line)
            return
        for line in listing.listing(names, settings, layers=layers):
            typer.echo(line)
    except (UnknownModel, WeightsUnavailable, ValueError, StorageError) as exc:
        fail(str(exc), 1)
    typer.echo(f"precision: default {settings.precision}; {bf16_note()}")
    from convatlas.shared.backend_select import describe

    typer.echo(describe())
    if classes:
        from convatlas.shared.models.labels import imagenet_classes

        for c in imagenet_classes():
            typer.echo(f"{c.index}\t{c.wnid}\t{c.label}")


@app.command()
@pattern_options
def grids(
    pattern: Mapping[str, Any],
    model: ModelOpt = "vgg16-hed",
    layers: Annotated[str, typer.Option(help="Comma-separated layer names, or 'all' (every Conv2D).")] = "block1_conv1",
    filters: Annotated[str, typer.Option(help="'0:64', '0,5,9', 'all' (every filter, pages of 64).")] = "0:64",
    out: OutOpt = Path("out"),
    batch_size: Annotated[int, typer.Option(help="Filters per model call.")] = 64,
    weights: WeightsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Filter-pattern grids in this process: 8×8 pages of patterns with 5 px black margins.

    Tile order is row-major: the tile at (row, col) of page p shows filter p·64 + row·8 + col.
    Re-running skips patterns that already exist in OUT.
    """
    from convatlas.producer.plans.grids import plan_grids
    from convatlas.producer.plans.plan import PlanError
    from convatlas.shared.config import Settings

    use_weights(weights)
    settings = Settings.from_env()
    try:
        params = pattern_params(pattern, settings)
        plan = plan_grids(model, layers, filters, params, settings)
    except (PlanError, ValueError) as exc:
        fail(str(exc))
    warn_if_slow(params.precision)
    _run_and_report(plan, out, batch_size, quiet)


@app.command()
@heatmap_options
def heatmaps(
    cam: Mapping[str, Any],
    paths: Annotated[list[str], typer.Argument(help="Image files and/or folders (scanned recursively).")],
    model: ModelOpt = "efficientnet-lite0",
    class_: Annotated[str | None, typer.Option("--class", "-c", help="Class index, WordNet id or name; default top-1.")] = None,
    layer: Annotated[str | None, typer.Option(help="Target conv layer; default the last 4-D feature map; 'auto': the report card's recommendation (see report-card).")] = None,
    out: OutOpt = Path("out"),
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 16,
    precision: PrecisionOpt = None,
    weights: WeightsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """CAM heatmaps in this process (Grad-CAM and six more): heatmap, overlay, raw .npy, record."""
    from convatlas.producer.plans.heatmaps import plan_heatmaps
    from convatlas.producer.plans.plan import PlanError
    from convatlas.shared.config import Settings

    use_weights(weights)
    settings = Settings.from_env()
    precision = precision or settings.precision
    cam = dict(cam)
    try:
        if "auto" in (cam.get("method"), layer):  # the report card's recommendation
            cam["method"], layer = _auto_method_layer(model, cam.get("method"), layer, out, settings)
        plan = plan_heatmaps(paths, model, class_, layer, settings, precision, cam)
    except PlanError as exc:
        fail(str(exc))
    warn_if_slow(precision)
    _run_and_report(plan, out, batch_size, quiet)


def _auto_method_layer(model: str, method: str | None, layer: str | None, out: Path,
                       settings: Any) -> tuple[str | None, str | None]:
    """``auto`` method / layer → the (method, layer) the model's report card in OUT recommends."""
    from convatlas.producer.plans.validate import model_weights_id
    from convatlas.shared.engine.report_card.store import (
        NoReportCard,
        load_recommendation,
        resolve_auto,
    )

    try:
        rec = load_recommendation(out, model, model_weights_id(model, settings))
    except NoReportCard as exc:
        fail(str(exc))
    return resolve_auto(method, layer, rec)


@app.command("report-card")
def report_card(
    paths: Annotated[list[str], typer.Argument(help="Photo files and/or folders (scanned recursively).")],
    model: ModelOpt = "efficientnet-lite0",
    sample: Annotated[int, typer.Option(help="Photos in the sample (the same photos on every run: the smallest sha256s).")] = 16,
    methods: Annotated[str, typer.Option(help="CAM methods, comma-separated, or 'all'.")] = "all",
    layers: Annotated[str, typer.Option(help="Candidate layers, comma-separated, or 'auto': the default Grad-CAM layer and the ends of the two stages before it.")] = "auto",
    steps: Annotated[int, typer.Option(help="Deletion / insertion steps.")] = 20,
    road_percentiles: Annotated[str, typer.Option(help="ROAD's percentiles, comma-separated.")] = "10,20,30,40,50,60,70,80,90",
    randomise_layers: Annotated[int, typer.Option(help="Randomisation check: how many top weighted layers are re-drawn.")] = 3,
    out: OutOpt = Path("out"),
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 16,
    precision: PrecisionOpt = None,
    weights: WeightsOpt = None,
) -> None:
    """A CAM report card: which CAM method and layer to trust for a model (used by `heatmaps --method auto --layer auto`).

    Every method at a few layers, scored by deletion, insertion and ROAD against random and
    Sobel baselines, with a model-randomisation check; a ranked table, plots (HTML, JSON) and
    the recommended (method, layer). Rule: score = ((insertion AUC − deletion AUC) + ROAD) / 2, averaged over the sample; the
    recommendation is the best real method not flagged by the randomisation check that beats
    both baselines. Re-running the same request reuses the stored card."""
    from convatlas.producer.plans.inputs import hash_inputs
    from convatlas.producer.plans.plan import PlanError
    from convatlas.producer.plans.report_card import card_request
    from convatlas.shared.config import Settings

    use_weights(weights)
    settings = Settings.from_env()
    precision = precision or settings.precision
    try:
        request = card_request(model, methods, layers, sample, steps, road_percentiles,
                               randomise_layers, precision)
        inputs, _ = hash_inputs(paths)
        if not inputs:
            raise PlanError("no images found")
    except (PlanError, ValueError) as exc:
        fail(str(exc))
    from convatlas.shared.engine.report_card.job import run_card
    from convatlas.shared.models.registry import get_model

    warn_if_slow(precision)
    lm = get_model(model, settings)
    result = run_card(lm, [(f.path, f.name, f.sha256) for f in inputs], out, request.methods,
                      request.layers, sample, request.protocol, request.randomisation,
                      precision=precision, batch_size=batch_size)
    card = result.card
    typer.echo(f"report card {result.key} ({model}, {len(card['photos'])} photos"
               f"{', reused' if result.reused else ''}) → {result.folder / 'index.html'}")
    for row in card["rows"]:
        flag = "  FLAGGED: maps unchanged by randomised weights" if row["flagged"] else ""
        typer.echo(f"  {row['rank']:>2}. {row['method']:<10} @ {row['layer']:<24} "
                   f"score {row['score']:+.4f}{flag}")
    rec = card["recommended"]
    typer.echo(f"recommended: {rec['method']} @ {rec['layer']} ({rec['reason']}); "
               f"saved as {result.recommendation}")


@app.command()
def examples(
    paths: Annotated[list[str], typer.Argument(help="Photo files and/or folders (scanned recursively).")],
    model: ModelOpt = "vgg16-hed",
    layers: Annotated[str, typer.Option(help="Comma-separated layer names, or 'all' (every Conv2D).")] = "block5_conv1",
    top: Annotated[int, typer.Option(help="Examples kept per unit (9: a 3×3 mosaic).")] = 9,
    batch: Annotated[int, typer.Option(help="Photos per map job (one forward pass each).")] = 32,
    side: Annotated[int | None, typer.Option(help="Model input side; default the model's (224 for size-free models).")] = None,
    out: OutOpt = Path("out"),
    precision: PrecisionOpt = None,
    weights: WeightsOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Dataset examples in this process: each unit's top photo patches, mosaics and records.

    Per unit the top photos' patches (score: the channel's maximum over positions), a mosaic and
    a record; per layer 8×8 pages of top-1 patches. Re-running over a folder with new photos
    merges only the new ones into the existing top-k.
    """
    from convatlas.producer.plans.examples import plan_examples
    from convatlas.producer.plans.plan import PlanError
    from convatlas.producer.run_examples import run_examples_local
    from convatlas.shared.config import Settings
    from convatlas.shared.storage import LocalStorage

    use_weights(weights)
    settings = Settings.from_env()
    precision = precision or settings.precision
    try:
        plan = plan_examples(paths, model, layers, top, settings, LocalStorage(out), precision,
                             batch, side)
    except PlanError as exc:
        fail(str(exc))
    warn_if_slow(precision)
    report = run_examples_local(plan, out, progress=not quiet)
    photos = sum(len(getattr(j, "images", ())) for j in plan.jobs)
    typer.echo(f"run {plan.run_id} (examples, {model}): {photos} new photos in {len(plan.jobs)} "
               f"map jobs; {len(plan.inputs)} photos given")
    for row in report["examples"]:
        typer.echo(f"  {row['layer']}: {row['photos']} photos merged in total, "
                   f"{len(row['rendered_pages'])} pages drawn → {row['pages_png'][0]}")
    for f in report["failed_photos"]:
        typer.echo(f"  FAILED {f['name'] or f['image_sha256']}: {f['error']}")
    for name, reason in plan.rejected:
        typer.echo(f"  NOT USED {name}: {reason}")
    t = report["timing"]
    typer.echo(f"  outputs in {out}; report: {out / 'runs' / plan.run_id / 'report.json'}")
    typer.echo(f"  maps {t['seconds']:.1f} s, reduce {t['reduce_seconds']:.1f} s; model load: "
               f"{json.dumps(t['model_load_seconds'])}")
    if report["failed_photos"] or report["counts"]["failed"]:
        raise typer.Exit(1)


@app.command()
def atlas(
    model: ModelOpt = "vgg16-hed",
    results: Annotated[Path, typer.Option(help="Local results folder to read (the --out of grids/examples/heatmaps).")] = Path("out"),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder of the site; default RESULTS/atlas/<model>.")] = None,
    fleet: Annotated[bool, typer.Option("--fleet", help="Read the fleet's S3 results (CONVATLAS_S3_*) instead; without --out the site goes into the bucket under atlas/<model>/.")] = False,
    weights: WeightsOpt = None,
) -> None:
    """A static site of the model's units: layers, units, their pictures and photos.

    Index of layers → layer pages → a page per unit (book and lucid patterns, dataset examples,
    flags and statistics), photo pages with their heatmaps. Relative links only: open
    index.html from disk, serve it, or upload the folder."""
    from convatlas.shared.atlas import DirSink, StorageSink, build_atlas, site_prefix
    from convatlas.shared.config import Settings
    from convatlas.shared.keys import model_slug
    from convatlas.shared.models.registry import UnknownModel, get_spec
    from convatlas.shared.storage import LocalStorage, StorageError, s3_storage_from_settings

    use_weights(weights)
    settings = Settings.from_env()
    try:
        get_spec(model)
    except UnknownModel as exc:
        fail(str(exc))
    sink: Any
    if fleet:
        source: Any = s3_storage_from_settings(settings)
        sink = DirSink(out) if out else StorageSink(source, site_prefix(model))
        where = str(out / "index.html") if out else f"{source.describe()} key {site_prefix(model)}/index.html"
    else:
        if not results.is_dir():
            fail(f"no results folder {results}")
        source = LocalStorage(results)
        dest = out or results / "atlas" / model_slug(model)
        sink, where = DirSink(dest), str(dest / "index.html")
    try:
        summary = build_atlas(source, model, sink, settings, progress=lambda name: None)
    except (StorageError, ValueError) as exc:
        fail(str(exc), 1)
    typer.echo(f"atlas of {model}: {summary.layers} layers, {summary.units} unit pages, "
               f"{summary.photos} photo pages, {summary.files} files in {summary.seconds:.1f} s → {where}")


def _run_and_report(plan, out: Path, batch_size: int, quiet: bool) -> None:  # noqa: ANN001
    from convatlas.producer.local import run_local
    from convatlas.shared.report import summary

    report = run_local(plan, out, batch_size, progress=not quiet)
    run_dir = out / "runs" / plan.run_id
    typer.echo(summary(report, str(out)))
    typer.echo(f"  report: {run_dir / 'report.json'}\n  gallery: {run_dir / 'index.html'}")
    t = report["timing"]
    typer.echo(f"  {t['jobs_run']} jobs run in {t['seconds']:.1f} s; model load: {json.dumps(t['model_load_seconds'])}")
    if report["counts"]["failed"]:
        raise typer.Exit(1)


def _mount_fleet() -> None:
    """Fleet commands: submit/status/fetch/worker, and the local stack."""
    from convatlas.producer.fleet_cli import register
    from convatlas.stack.cli import stack_app

    register(app)
    app.add_typer(stack_app, name="stack", help="Start/stop a local Redis + SeaweedFS + workers + Flower.")


_mount_fleet()


def main() -> None:
    app(prog_name="convatlas")


if __name__ == "__main__":
    main()
