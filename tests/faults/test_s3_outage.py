"""S3 down for a while mid-run: tasks retry with backoff and the run completes, and no partial
object is ever visible under a final key (each PUT is all or nothing)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import submit_plan
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.images.decode import decode_image
from convatlas.shared.storage import S3Storage, StorageError
from convatlas.stack.servers import SeaweedS3Server
from tests.faults.conftest import check_report, retry_gap_bound, wait_until

JOBS = 64
OUTAGE_S = 10  # the fault's length (the injection, not a wait)


@pytest.fixture
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3Server]:
    """A SeaweedFS this test may kill (the session one must stay up)."""
    server = SeaweedS3Server(tmp_path_factory.mktemp("own-s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def check_object(storage: S3Storage, key: str) -> None:
    """A final key holds a complete object: PNGs decode in full, JSON and .npy parse."""
    data = storage.get_bytes(key)
    if key.endswith(".png"):
        assert decode_image(data).ndim == 3, key
    elif key.endswith(".json"):
        json.loads(data)
    elif key.endswith(".npy"):
        np.load(io.BytesIO(data), allow_pickle=False)


class Watcher(threading.Thread):
    """Reads every result object as soon as it is listed, all run long, outage included."""

    def __init__(self, storage: S3Storage) -> None:
        super().__init__(daemon=True)
        self.storage, self.seen, self.bad = storage, set[str](), list[str]()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                for key in sorted(set(self.storage.list_keys("results/")) - self.seen):
                    try:
                        check_object(self.storage, key)
                    except StorageError:
                        break  # S3 is down: try again next round
                    except Exception as exc:  # a torn object: record it
                        self.bad.append(f"{key}: {type(exc).__name__}: {exc}")
                    self.seen.add(key)
            except StorageError:
                continue


def test_s3_outage_mid_run(make_rig, own_s3: SeaweedS3Server) -> None:  # noqa: ANN001
    rig = make_rig(visibility_timeout=150, concurrency=4, s3=own_s3)
    watcher_storage = S3Storage(
        bucket=rig.storage.bucket, prefix=rig.settings.s3_prefix,
        endpoint_url=own_s3.endpoint_url, access_key=own_s3.access_key,
        secret_key=own_s3.secret_key, max_attempts=1, connect_timeout=1.0)
    watcher = Watcher(watcher_storage)
    plan = plan_grids("vgg16-hed", "block1_conv1", f"0:{JOBS}", PatternParams(32, 3),
                      rig.settings)
    submit_plan(plan, rig.storage, rig.app)
    watcher.start()
    markers = {j.marker for j in plan.jobs}
    # the first batch (model load included) ends within the batch bound
    wait_until(lambda: len(markers & set(rig.storage.list_keys("results/"))) >= 4,
               rig.batch_bound(), "the first tiles")
    own_s3.kill()  # abrupt: writes in flight are cut off
    down = time.monotonic()
    time.sleep(OUTAGE_S)
    own_s3.start()  # same ports, same data dir
    outage = time.monotonic() - down
    print(f"S3 was down {outage:.1f} s")
    # tasks that met the outage retry with backoff: the retry spanning its end comes within
    # retry_gap_bound, then runs in a batch
    report = rig.follow(plan, retry_gap_bound(outage) + rig.batch_bound()).report("S3 outage")
    watcher.stop.set()
    watcher.join(30)  # a hang guard: it stops within its 0.3 s poll and one pass over the keys
    check_report(rig.storage, plan, report)
    assert report["counts"]["done"] == JOBS
    assert "Retry in" in rig.logs()  # the outage was felt, and retried with backoff
    assert watcher.bad == []
    for key in rig.storage.list_keys("results/"):  # and every final object is whole now
        check_object(rig.storage, key)
    assert len(watcher.seen) >= JOBS
    assert rig.ping_worker()
