"""Job functions: the units of work, run the same way by the local CLI and by Celery workers.

One module per kind (``patterns``, ``gradcam``, ``grid``), what they share in ``common``, and
the registry of kinds in ``kinds``. Every job succeeds or fails on its own: one corrupt photo
fails that photo, not its batch. The names below are the package's public surface.
"""

from convatlas.shared.jobs.common import (
    Job,
    JobResult,
    existing_result,
    io_map,
    read_json,
    record_failure,
)
from convatlas.shared.jobs.grid import TILES_PER_PAGE, GridJob, grid_from_dict, reduce_grid
from convatlas.shared.jobs.heatmaps import GradcamJob, run_gradcam_jobs
from convatlas.shared.jobs.kinds import KINDS, TASK_NAMES, job_from_dict, kind_of, run_jobs
from convatlas.shared.jobs.patterns import FilterJob, run_filter_jobs

__all__ = [
    "KINDS", "TASK_NAMES", "TILES_PER_PAGE", "FilterJob", "GradcamJob", "GridJob", "Job",
    "JobResult", "existing_result", "grid_from_dict", "io_map", "job_from_dict", "kind_of",
    "read_json", "record_failure", "reduce_grid", "run_filter_jobs", "run_gradcam_jobs",
    "run_jobs",
]
