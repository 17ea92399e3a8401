"""Completion without chords: each job's outcome is counted once in Redis (``shared.progress``);
the marker that completes a grid page queues its reducer, the one that completes the run queues
its report. A run is any number of independent tasks: Celery holds no chord state, and nothing
per job stays in Redis once the run is reported.

Task messages carry ``run = {"id": run id, "i": index of the job in the manifest, "p": index of
its grid page or None}``; a job sent without ``run`` (an old message, a direct call) still runs,
it just counts nowhere.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from convatlas.shared.config import Settings
from convatlas.shared.jobs import TASK_NAMES
from convatlas.shared.progress import Fired, RunProgress, progress_client

log = logging.getLogger(__name__)

_client: Any = None
_lock = threading.Lock()


def client() -> Any:
    """This process's Redis client for run progress (None when there is no Redis)."""
    global _client
    with _lock:
        if _client is None:
            _client = progress_client(Settings.from_env()) or False
        return _client or None


def run_progress(run_id: str) -> RunProgress | None:
    c = client()
    return None if c is None else RunProgress(c, run_id)


def send_reduce(app: Any, run_id: str, page: int) -> None:
    app.send_task(TASK_NAMES["reduce"], args=(run_id, page))


def send_finish(app: Any, run_id: str) -> None:
    app.send_task(TASK_NAMES["finish"], args=(run_id,))


def act_on(app: Any, run_id: str, page: int | None, fired: Fired) -> None:
    if fired.page and page is not None:
        send_reduce(app, run_id, page)
    if fired.run:
        send_finish(app, run_id)


def count_outcome(app: Any, run: dict[str, Any] | None) -> None:
    """The job of ``run`` has an outcome in storage: count it, queue what it completes."""
    if not run:
        return
    progress = run_progress(str(run["id"]))
    if progress is None:
        return
    page = run.get("p")
    act_on(app, str(run["id"]), page, progress.mark(int(run["i"]), page))
