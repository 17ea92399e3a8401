"""The tasks' retry/error contract (``workers.tasks.FleetTask``), held in one place for every
task that is not a job: storage unreachable → retried, then an ``error`` result; anything else →
an ``error`` result at once (the atlas also records it for the producer waiting on it). Tasks
run eagerly here (``apply``), without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from convatlas.shared.storage import StorageUnavailable
from convatlas.workers import tasks
from convatlas.workers.app import TASK_NAMES, app

RUN_TASKS = [("reduce", ("r-1", 0)), ("finish", ("r-1",)), ("examples-reduce", ("r-1",)),
             ("atlas", ("vgg16-hed",))]


class BrokenStorage:
    """Every read fails with ``error``; writes are kept."""

    def __init__(self, error: Exception) -> None:
        self.error, self.calls, self.written = error, 0, {}

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        self.written[key] = data

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise self.error
        return fail


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(error: Exception) -> BrokenStorage:
        storage = BrokenStorage(error)
        monkeypatch.setattr(tasks, "worker_storage", lambda: storage)
        monkeypatch.setattr(tasks, "backoff", lambda retries: 0.0)
        monkeypatch.setattr(tasks, "run_progress", lambda run_id: None)
        return storage
    return install


@pytest.mark.parametrize(("key", "args"), RUN_TASKS)
def test_storage_unavailable_is_retried_then_reported(broken: Any, key: str, args: tuple) -> None:
    storage = broken(StorageUnavailable("S3 down"))
    result = app.tasks[TASK_NAMES[key]].apply(args=args).get()
    assert result["status"] == "error"
    assert result["error"] == f"storage unavailable after {tasks.MAX_RETRIES} retries: S3 down"
    assert storage.calls == tasks.MAX_RETRIES + 1  # the first try and every retry
    assert storage.written == {}


@pytest.mark.parametrize(("key", "args"), RUN_TASKS)
def test_any_other_error_is_reported_at_once(broken: Any, key: str, args: tuple) -> None:
    storage = broken(RuntimeError("boom"))
    result = app.tasks[TASK_NAMES[key]].apply(args=args).get()
    assert result == {"status": "error", "outputs": {}, "error": "RuntimeError: boom",
                      "batch": None}
    assert storage.calls == 1
    if key == "atlas":  # the producer waiting for the atlas summary learns why
        from convatlas.shared.atlas import summary_key

        assert storage.written == {summary_key("vgg16-hed"): b'{"error": "RuntimeError: boom"}'}
    else:
        assert storage.written == {}


def test_every_kind_has_its_tasks_under_its_names() -> None:
    from convatlas.shared.jobs import KINDS

    app.finalize()
    assert {"filter", "gradcam", "examples"} <= set(tasks.JOB_TASKS)  # kinds known at import
    for name in tasks.JOB_TASKS:
        kind = KINDS[name]
        assert isinstance(app.tasks[kind.task], tasks.FleetTask)
        if kind.post_run is not None:
            assert isinstance(app.tasks[kind.post_run.task], tasks.FleetTask)
    assert "examples" in tasks.STEP_TASKS and "filter" not in tasks.STEP_TASKS
    assert TASK_NAMES["examples-reduce"] == "convatlas.reduce_examples"
