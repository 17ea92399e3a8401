"""The grids planner: a tile job per chosen filter, grouped into 8×8 grid pages per layer."""

from __future__ import annotations

from convatlas.producer.plans.plan import InputFile, Plan, run_id_of
from convatlas.producer.plans.validate import (
    check_pattern_size,
    model_weights_id,
    parse_filters,
    parse_layers,
    resolve_model,
)
from convatlas.shared.config import Settings
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.jobs import TILES_PER_PAGE, GridJob, Job

__all__ = ["plan_grids"]


def plan_grids(
    model: str, layers: str, filters: str, params: PatternParams, settings: Settings
) -> Plan:
    """A ``Plan`` of the tile jobs of ``filters`` of ``layers`` (and the grid pages they fill)."""
    resolve_model(model)
    wid = model_weights_id(model, settings)
    jobs: list[Job] = []
    grids: list[GridJob] = []
    chosen_layers = parse_layers(model, layers)
    check_pattern_size(model, chosen_layers, params.size)
    for layer, channels in chosen_layers:
        chosen = parse_filters(filters, channels)
        for page in sorted({f // TILES_PER_PAGE for f in chosen}):
            on_page = tuple(f for f in chosen if f // TILES_PER_PAGE == page)
            grid = GridJob(model, wid, layer, page, on_page, params)
            grids.append(grid)
            jobs.extend(grid.tile_jobs())
    plan = Plan("grids", model, jobs, grids)
    if params.spectrum_from:  # maco --spectrum-from: the spectrum travels as a run input
        plan.inputs.append(spectrum_input(params.spectrum_from))
    plan.run_id = run_id_of("grids", jobs)
    return plan


def spectrum_input(sha: str) -> InputFile:
    """A maco spectrum computed here (``--spectrum-from``) as a run input (``inputs/<sha256>``)."""
    from convatlas.shared.engine.param.spectra import spectrum_path

    path = spectrum_path(sha)
    return InputFile(path, f"spectrum-{sha[:12]}.npy", sha, path.stat().st_size)
