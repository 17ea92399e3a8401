"""Fixtures for the end-to-end fleet tests: ``convatlas.stack.harness.Fleet`` with a real
``convatlas worker`` process on the session's Redis and SeaweedFS."""

from __future__ import annotations

from collections.abc import Iterator

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
           "start_worker", "stop_worker", "wait_ready"]


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer, s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    f = Fleet.create(redis_server, s3_server, tmp_path_factory.mktemp("fleet"), db=REDIS_DB)
    f.app.control.purge()  # leftovers of an interrupted earlier session in this database
    try:
        f.start_worker()
        yield f
    finally:
        f.close()
