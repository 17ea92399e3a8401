"""An S3 endpoint that stops answering without refusing (its packets dropped for 90 s), then one
that answers 2 s late to every request. A worker's thread may wait on S3 only as long as the
client's timeouts and retry budget allow (``convatlas.shared.storage.S3_CALL_BOUND_S``); the
tasks then retry with backoff, and every job finishes once S3 is back.

The worker reaches S3 through a proxy (``tests.faults.tcp_proxy``): the blackout drops the
proxy's port, the latency is the proxy's delay, and the session's SeaweedFS stays untouched for
everyone else (this test's own checks read it directly).
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import submit_plan
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.storage import S3_CALL_BOUND_S
from tests.faults.conftest import check_report, retry_gap_bound, wait_until
from tests.faults.tcp_proxy import Silencer, network_faults

JOBS = 16
SLOW_JOBS = 8
OUTAGE_S = 90  # the fault's length (the injection, not a wait)
LATENCY_S = 2.0  # added to every S3 request in the second phase
RECOVERY_TARGET_S = 60  # S3 back → run reported (the S3 outage target)

network = pytest.fixture(name="network")(network_faults)


@pytest.mark.slow
@pytest.mark.redis_broker  # S3's faults do not depend on the broker: one broker is enough
def test_s3_blackholed_then_slow(make_rig, network: Silencer) -> None:  # noqa: ANN001
    rig = make_rig(worker=False, visibility_timeout=150, concurrency=4)
    endpoint = rig.env["CONVATLAS_S3_ENDPOINT"]
    proxy = network.proxy(urlsplit(endpoint).port or 80)
    rig.env["CONVATLAS_S3_ENDPOINT"] = proxy.url_for(endpoint)
    worker = rig.start_worker()

    # --- 1. blackholed -------------------------------------------------------------------
    plan = plan_grids("vgg16-hed", "block1_conv1", f"0:{JOBS}", PatternParams(32, 3),
                      rig.settings)
    submit_plan(plan, rig.storage, rig.app)
    markers = {j.marker for j in plan.jobs}
    wait_until(lambda: markers & set(rig.storage.list_keys("results/")), rig.batch_bound(),
               "the first tiles")
    seen = len(rig.logs())
    network.silence(proxy)
    down = time.monotonic()
    # the worker's threads give up on the silent endpoint within the client's bound, and the
    # tasks retry (rather than hang on boto3's defaults: 60 s per read, 5 attempts)
    wait_until(lambda: "Retry in" in rig.logs()[seen:], S3_CALL_BOUND_S, "a retry")
    print(f"first retry {time.monotonic() - down:.1f} s into the blackout "
          f"(bound {S3_CALL_BOUND_S:.0f} s, {network.how})")
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
    network.restore()
    back = time.monotonic()
    report = rig.follow(plan, retry_gap_bound(OUTAGE_S) + rig.batch_bound()).report("S3 blackout")
    recovery = time.monotonic() - back
    print(f"S3 silent {OUTAGE_S} s; run reported {recovery:.1f} s after it answered again")
    check_report(rig.storage, plan, report)
    assert report["counts"]["done"] == JOBS
    assert recovery <= RECOVERY_TARGET_S, recovery

    # --- 2. every request 2 s late -------------------------------------------------------
    proxy.delay = LATENCY_S
    slow = plan_grids("vgg16-hed", "block1_conv1", f"{JOBS}:{JOBS + SLOW_JOBS}",
                      PatternParams(32, 3), rig.settings)
    seen = len(rig.logs())
    start = time.monotonic()
    submit_plan(slow, rig.storage, rig.app)
    # slow is not stalled: each batch still ends within its bound (a request takes ~2 s, far
    # below the client's read timeout, so nothing is retried)
    report = rig.follow(slow, rig.batch_bound()).report(f"S3 +{LATENCY_S:.0f} s per request")
    print(f"{SLOW_JOBS} jobs with S3 +{LATENCY_S:.0f} s per request: {time.monotonic() - start:.1f} s")
    check_report(rig.storage, slow, report)
    assert report["counts"]["done"] == SLOW_JOBS
    assert "Retry in" not in rig.logs()[seen:]
    assert worker.poll() is None and rig.starts == 1
