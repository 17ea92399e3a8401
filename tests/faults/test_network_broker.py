"""A half-open broker: the worker's packets to and from its broker (and, on RabbitMQ, the Redis
that holds results and run progress) are dropped for 90 s, then let through. Nothing is
refused, no connection is closed: only timeouts can tell (``convatlas.workers.config``).

The worker must resume consuming by itself (no restart) within its reconnect bound, the
outcomes that finished during the blackout must be counted once Redis answers again
(``convatlas.workers.completion.Recounter``) rather than by the healer minutes later, and the run
must complete within ``RECOVERY_TARGET_S`` of the network's return with nothing lost.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import read_report, submit_plan
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.progress import Fired
from convatlas.workers import completion
from convatlas.workers.config import BROKER_CONNECT_TIMEOUT_S
from tests.faults.conftest import RECONNECT_MAX_S, Rig, check_report, wait_until
from tests.faults.tcp_proxy import Silencer, TcpProxy, network_faults

JOBS = 32
OUTAGE_S = 90  # the fault's length (the injection, not a wait)
RECOVERY_TARGET_S = 60  # network back → run reported (issue 26)
# a recounter try begun in the blackout ends within the progress client's connect and read
# timeouts (10 s each, shared.progress.progress_client); the next comes RECOUNT_EVERY_S later
RECOUNT_BOUND_S = 10 + 10 + completion.RECOUNT_EVERY_S + 5

network = pytest.fixture(name="network")(network_faults)


def proxy_broker_side(rig: Rig, network: Silencer) -> list[TcpProxy]:
    """Route the worker's broker and result-backend/progress connections through proxies (the
    test's own clients keep the direct ones)."""
    proxies: dict[int, TcpProxy] = {}
    for var in ("CONVATLAS_BROKER_URL", "CONVATLAS_RESULT_BACKEND"):
        url = rig.env.get(var)
        if url:
            port = urlsplit(url).port
            assert port is not None, var
            proxy = proxies.get(port) or network.proxy(port)
            proxies[port] = proxy
            rig.env[var] = proxy.url_for(url)
    return list(proxies.values())


def report_within(rig: Rig, run_id: str, bound: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + bound
    while (report := read_report(rig.storage, run_id)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"no report {bound:.0f} s after {what}\n" + rig.logs()[-4000:])
        time.sleep(0.5)
    return report


@pytest.mark.slow
def test_half_open_broker(make_rig, network: Silencer) -> None:  # noqa: ANN001
    rig = make_rig(worker=False, concurrency=16)
    proxies = proxy_broker_side(rig, network)
    worker = rig.start_worker()
    plan = plan_grids("vgg16-hed", "block1_conv1", f"0:{JOBS}", PatternParams(32, 3),
                      rig.settings)
    submit_plan(plan, rig.storage, rig.app)
    # the worker holds its first tasks (the model is still loading): cut it off now, so they
    # finish during the blackout and their counts fail
    wait_until(lambda: "] received" in rig.log(), rig.batch_bound(), "the first task")
    network.silence(*proxies)
    time.sleep(OUTAGE_S)
    assert worker.poll() is None, "the worker died during the blackout"
    network.restore()
    back = time.monotonic()
    print(f"broker side silent {OUTAGE_S} s ({network.how})")

    # The target is RECOVERY_TARGET_S (met on an idle machine, see the README's
    # reliability table); what the mechanism guarantees, on a busy CI machine too, is the
    # reconnect, one redelivery of what the worker held, then a healthy run of what is left.
    # A message BRPOP took off the queue in the dark never reaches the worker (kombu's
    # pop-then-record window): only the healer brings it back, within its heal bound.
    bound = (RECONNECT_MAX_S + BROKER_CONNECT_TIMEOUT_S + rig.redelivery_bound()
             + rig.heal_bound() + rig.run_deadline(JOBS))
    report = report_within(rig, plan.run_id, bound, "the network came back")
    recovery = time.monotonic() - back
    print(f"run reported {recovery:.1f} s after the network came back "
          f"(target {RECOVERY_TARGET_S} s, bound {bound:.0f} s)")
    check_report(rig.storage, plan, report)
    assert report["counts"]["done"] == JOBS
    log = rig.logs()
    assert "could not count the outcome" in log  # the blackout was felt …
    # … and those counts were made once it ended. Two paths race: the tasks the worker held
    # during the blackout come back (RabbitMQ requeues a dead connection's deliveries; on
    # Redis the blackout outlasts the visibility timeout) and are skipped, which counts them;
    # and the recounter, whose next try may first wait out a connect begun in the blackout.
    # Either may come first, and the recounter settles what it holds in any case.
    healed = (report.get("healing") or {}).get("requeued", 0)
    if not healed:  # a healed run's counts may all have come from the redelivered tasks
        wait_until(lambda: "whose count had failed" in rig.logs(), RECOUNT_BOUND_S,
                   "the recounter to settle the failed counts")
    print(f"messages healed: {healed}")
    assert worker.poll() is None and rig.starts == 1  # no restart
    # it consumes again: a fresh task is answered (within the reconnect schedule's bound)
    wait_until(rig.ping_worker, RECONNECT_MAX_S + BROKER_CONNECT_TIMEOUT_S, "a ping")


class FakeProgress:
    """``RunProgress.mark`` on a bitmap, failing while ``down``."""

    def __init__(self) -> None:
        self.bits: set[int] = set()
        self.down = True
        self.duplicates = 0

    def mark(self, index: int, page: int | None = None) -> Fired:
        if self.down:
            raise ConnectionError("Timeout connecting to server")
        if index in self.bits:
            self.duplicates += 1
            return Fired(False, False)
        self.bits.add(index)
        return Fired(False, len(self.bits) == 3)


def test_failed_counts_are_kept_and_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No servers: counts that fail wait in the recounter and are counted once each at the next
    successful count; the run's completion fires once."""
    progress = FakeProgress()
    sent: list[tuple[str, str, int | None]] = []
    monkeypatch.setattr(completion, "run_progress", lambda run_id: progress)
    monkeypatch.setattr(completion, "send_finish", lambda app, rid: sent.append(("finish", rid, None)))
    app = object()
    for i in (0, 1):
        completion.count_or_defer(app, {"id": "r", "i": i, "p": None})
    rc = completion.recounter(app)
    assert rc.pending() == 2 and progress.bits == set()
    progress.down = False
    completion.count_or_defer(app, {"id": "r", "i": 2, "p": None})
    assert progress.bits == {0, 1, 2} and rc.pending() == 0
    assert sent == [("finish", "r", None)] and progress.duplicates == 0
