"""Job functions: the units of work, run the same way by the local CLI and by Celery workers.

The job kinds, each in its module: ``patterns`` (a filter's pattern), ``heatmaps`` (a photo's
CAMs), ``examples_map`` (a batch of photos' unit maxima, with the run-level reduce in
``examples_reduce``); a grid page's reduce in ``grid``; what they share in ``common`` and
``stages``; the registry of kinds in ``kinds``. Every job succeeds or fails on its own: one
corrupt photo fails that photo, not its batch. The names below are the package's public surface.
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
from convatlas.shared.jobs.kinds import (
    KINDS,
    TASK_NAMES,
    JobKind,
    RunStep,
    job_from_dict,
    kind_of,
    post_run_step,
    register,
    run_jobs,
)
from convatlas.shared.jobs.patterns import FilterJob, run_filter_jobs

__all__ = [
    "KINDS", "TASK_NAMES", "TILES_PER_PAGE", "FilterJob", "GradcamJob", "GridJob", "Job",
    "JobKind", "JobResult", "RunStep", "existing_result", "grid_from_dict", "io_map",
    "job_from_dict", "kind_of", "post_run_step", "read_json", "record_failure", "reduce_grid",
    "register", "run_filter_jobs", "run_gradcam_jobs", "run_jobs",
]
