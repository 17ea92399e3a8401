"""Fixtures for the end-to-end fleet tests: ``convatlas.stack.harness.Fleet`` with a real
``convatlas worker`` process on the session's Redis and SeaweedFS."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from convatlas.stack.harness import (
    BUCKET,
    REPO,
    Fleet,
    fleet_env,
    s3_storage,
    settings_from,
    start_worker,
    stop_worker,
    wait_ready,
)
from convatlas.stack.servers import RedisServer, SeaweedS3Server

REDIS_DB = 11  # this module's own databases (11, 12): other tests' workers must not take
# its tasks

__all__ = ["BUCKET", "REPO", "Fleet", "fleet", "fleet_env", "s3_storage", "settings_from",
           "start_worker", "started_fleet", "stop_worker", "wait_ready"]


@contextmanager
def started_fleet(
    redis_server: RedisServer, s3_server: SeaweedS3Server, dir: Path, *, db: int,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Fleet]:
    """A fleet on Redis database ``db`` with its worker started; closed on exit."""
    f = Fleet.create(redis_server, s3_server, dir, db=db, extra_env=extra_env)
    f.app.control.purge()  # leftovers of an interrupted earlier session in this database
    try:
        f.start_worker()
        yield f
    finally:
        f.close()


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    with started_fleet(redis_server, s3_server, tmp_path_factory.mktemp("fleet"), db=REDIS_DB) as f:
        yield f
