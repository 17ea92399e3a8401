"""Shared fixtures: real throwaway servers on free loopback ports, stopped at teardown.

More fixture modules: create ``tests/fixtures_<topic>.py`` and add ``"tests.fixtures_<topic>"``
to ``pytest_plugins`` below.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from convatlas.shared.storage import LocalStorage, S3Storage
from convatlas.stack.servers import RedisServer, SeaweedS3Server

pytest_plugins: list[str] = []

KINDS = ("unit", "engine", "integration", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder: ``pytest -m unit`` runs the quick ones (no servers, no
    networks), ``-m engine`` the server-free ones that run real networks."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for kind in KINDS:
            if kind in parts:
                item.add_marker(getattr(pytest.mark, kind))

TEST_BUCKET = "convatlas-test"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A password-protected redis-server for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=secrets.token_urlsafe(18))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3Server]:
    """SeaweedFS S3 with random credentials for the whole session. Do not restart it: tests
    that need a restart start their own ``SeaweedS3Server``."""
    server = SeaweedS3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_storage(s3_server: SeaweedS3Server) -> S3Storage:
    """S3Storage on the session bucket under a prefix unique to this test."""
    return S3Storage(
        bucket=TEST_BUCKET,
        prefix=f"t-{uuid.uuid4().hex[:12]}",
        endpoint_url=s3_server.endpoint_url,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        create_bucket=True,
    )


@pytest.fixture
def local_storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")
