"""Which jobs already have an outcome in storage, found by listing folders, not by a HEAD each."""

from __future__ import annotations

from collections.abc import Sequence

from convatlas.shared.jobs.common import Job, read_json
from convatlas.shared.jobs.grid import GridJob
from convatlas.shared.storage import Storage


def outcome_keys(storage: Storage, jobs: Sequence[Job], per_folder_limit: int = 8) -> set[str]:
    """Existing markers and error markers of ``jobs``, from listings instead of a HEAD request
    per job: one listing per pattern folder (layer and parameters); for Grad-CAM, one per photo
    when there are few photos, else one of the folder shared by all photos of that target."""
    by_base: dict[str, set[str]] = {}
    for job in jobs:
        folder, base = job.outcome_folders()
        by_base.setdefault(base, set()).add(folder)
    found: set[str] = set()
    for base, group in sorted(by_base.items()):
        for prefix in [base] if len(group) > per_folder_limit else sorted(group):
            found.update(storage.list_keys(prefix))
    return found


def has_outcome(job: Job, found: set[str]) -> bool:
    return job.marker in found or job.error_key in found


def job_pages(grids: Sequence[GridJob], jobs: Sequence[Job]) -> list[int | None]:
    """The index of each job's grid page in ``grids`` (None for jobs outside any page)."""
    page_of = {t.marker: p for p, g in enumerate(grids) for t in g.tile_jobs()}
    return [page_of.get(j.marker) for j in jobs]


def page_needs_rebuild(grid: GridJob, storage: Storage) -> bool:
    """A page was never built, or a tile it lacked has arrived since (a tile that failed for
    good stays black, so it does not count)."""
    info = read_json(storage, grid.marker)
    if info is None:
        return True
    missing = set(info.get("missing") or [])
    lacking = [t for t in grid.tile_jobs() if t.filter in missing]
    if not lacking:
        return False
    found = outcome_keys(storage, lacking)
    return any(t.marker in found for t in lacking)
