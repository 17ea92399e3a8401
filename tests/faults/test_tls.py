"""TLS on (issue 26, item 9): Redis serves ``rediss://`` only and S3 ``https`` only, with
certificates from a private CA (``convatlas.stack.tls``, ``trustme``). The fleet runs over
it: workers, producer, run progress and the test's own clients verify the servers against
``CONVATLAS_TLS_CA``. Plain TCP is refused, and so is a client that does not trust the CA.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import submit_plan, wait_for_run
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.storage import S3Storage, StorageError
from convatlas.stack.harness import Fleet
from convatlas.stack.servers import RedisServer, SeaweedS3Server
from convatlas.stack.tls import TlsFiles, make_tls
from tests.faults.conftest import TASK_TIME_LIMIT_S, check_report

JOBS = 8


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[TlsFiles, RedisServer, SeaweedS3Server]]:
    d = tmp_path_factory.mktemp("tls")
    tls = make_tls(d / "ca")
    rds = RedisServer(d / "redis", password=secrets.token_urlsafe(18), tls=tls)
    s3 = SeaweedS3Server(d / "s3", tls=tls)
    rds.start()
    try:
        s3.start()
        try:
            yield tls, rds, s3
        finally:
            s3.stop()
    finally:
        rds.stop()


def test_a_fleet_runs_over_tls(tls_stack: Any, tmp_path: Path) -> None:
    tls, rds, s3 = tls_stack
    assert rds.url.startswith("rediss://") and s3.endpoint_url.startswith("https://")
    fleet = Fleet.create(rds, s3, tmp_path, concurrency=8,
                         extra_env={"CONVATLAS_TASK_TIME_LIMIT": str(TASK_TIME_LIMIT_S)})
    try:
        fleet.start_worker()
        plan = plan_grids("vgg16-hed", "block1_conv1", f"0:{JOBS}", PatternParams(32, 3),
                          fleet.settings)
        submit_plan(plan, fleet.storage, fleet.app)
        # a healthy run: every job, then its reduce and its report, each within a task's limit
        report = wait_for_run(fleet.storage, plan.run_id, (JOBS + 2) * TASK_TIME_LIMIT_S,
                              progress=False)
        check_report(fleet.storage, plan, report)
        assert report["counts"]["done"] == JOBS
        log = fleet.logs()
        assert "rediss://" in log  # the worker's transport
        assert fleet.redis_client().exists(f"convatlas:run:{plan.run_id}:state") == 0  # cleared
    finally:
        fleet.close()


def test_plain_tcp_and_untrusted_clients_are_refused(tls_stack: Any) -> None:
    tls, rds, s3 = tls_stack
    plain = redis.Redis(port=rds.port, password=rds.password, socket_timeout=5,
                        socket_connect_timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()
    untrusted = redis.Redis(port=rds.port, password=rds.password, ssl=True,
                            ssl_cert_reqs=ssl.CERT_REQUIRED, socket_timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        untrusted.ping()
    trusted = redis.Redis(port=rds.port, password=rds.password, ssl=True,
                          ssl_ca_certs=str(tls.ca), socket_timeout=5)
    assert trusted.ping()

    def s3_client(endpoint: str, ca: Path | None) -> S3Storage:
        return S3Storage("tls-check", endpoint_url=endpoint, access_key=s3.access_key,
                         secret_key=s3.secret_key, max_attempts=1, connect_timeout=5,
                         read_timeout=5, ca_bundle=str(ca) if ca else None)

    with pytest.raises(StorageError):  # plain HTTP to the https port
        s3_client(s3.endpoint_url.replace("https://", "http://"), tls.ca).ensure_bucket()
    with pytest.raises(StorageError, match="CONVATLAS_TLS_CA"):  # the CA is not trusted
        s3_client(s3.endpoint_url, None).ensure_bucket()
    s3_client(s3.endpoint_url, tls.ca).ensure_bucket()  # the trusted client gets through
