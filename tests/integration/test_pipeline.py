"""End to end on the fleet, no mocks: real Redis (password), SeaweedFS (credentials) and a real
``celery worker`` process with the threads pool; results checked in S3 with boto3 and s3cmd."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.plans.heatmaps import plan_heatmaps
from convatlas.producer.submit import submit_plan, wait_for_run
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.images.decode import decode_image
from convatlas.shared.render import grid_size, tile_origin
from convatlas.shared.report import gallery_key, report_key
from convatlas.shared.samples import sample_photos

if TYPE_CHECKING:
    from tests.pipeline_fixtures import Fleet

pytest_plugins = ["tests.pipeline_fixtures"]

REPO = Path(__file__).resolve().parents[2]

WAIT_S = 180


def png(storage, key: str) -> np.ndarray:  # noqa: ANN001
    return decode_image(storage.get_bytes(key))


def records(storage, jobs) -> list[dict]:  # noqa: ANN001
    return [json.loads(storage.get_bytes(j.marker)) for j in jobs]


def s3cmd(fleet: Fleet, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """s3cmd (not boto3) with its credentials in a private config file, not on the command line."""
    host = fleet.env["CONVATLAS_S3_ENDPOINT"].removeprefix("http://")
    cfg = tmp_path / "s3cmd.cfg"
    cfg.write_text(
        "[default]\n"
        f"access_key = {fleet.env['AWS_ACCESS_KEY_ID']}\n"
        f"secret_key = {fleet.env['AWS_SECRET_ACCESS_KEY']}\n"
        f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\n"
        "signature_v2 = False\nbucket_location = us-east-1\n"
    )
    cfg.chmod(0o600)
    exe = Path(sys.executable).parent / "s3cmd"
    return subprocess.run([str(exe), "-c", str(cfg), *args], capture_output=True, text=True,
                          timeout=60)


def check_grid(fleet: Fleet, plan, tile: int) -> None:  # noqa: ANN001
    st = fleet.storage
    (grid,) = plan.grids
    side = 8 * tile + 7 * 5
    assert grid_size(tile) == side
    page = png(st, grid.outputs()["png"])
    assert page.shape == (side, side, 3)
    for pos, job in enumerate(grid.tile_jobs()):
        t = png(st, job.outputs()["png"])
        assert t.shape == (tile, tile, 3)
        top, left = tile_origin(pos, tile)
        assert np.array_equal(page[top : top + tile, left : left + tile], t), f"tile {pos}"
    info = json.loads(st.get_bytes(grid.marker))
    assert info["missing"] == [] and info["size"] == [side, side]


def test_grid_page_small(fleet: Fleet, tmp_path: Path) -> None:
    plan = plan_grids("vgg16-hed", "block1_conv1", "0:64", PatternParams(32, 5), fleet.settings)
    res = submit_plan(plan, fleet.storage, fleet.app)
    assert res.queued_jobs == 64 and res.queued_tasks == 64  # tiles; reducer and report follow
    report = wait_for_run(fleet.storage, plan.run_id, WAIT_S, progress=False)
    assert report["complete"], report["counts"]
    assert report["counts"] == {"done": 64, "failed": 0, "pending": 0, "total": 64,
                                "rejected": 0}
    check_grid(fleet, plan, 32)
    batches = [r["batch"] for r in records(fleet.storage, plan.jobs)]
    assert max(batches) > 1, batches
    print(f"filter batch sizes: {sorted(set(batches))}")

    # gallery with presigned links, report in S3
    html = fleet.storage.get_bytes(gallery_key(plan.run_id)).decode()
    assert "X-Amz-Signature" in html

    # s3cmd sees the same objects
    grid_key = fleet.storage._full(plan.grids[0].outputs()["png"])
    bucket = fleet.env["CONVATLAS_S3_BUCKET"]
    ls = s3cmd(fleet, tmp_path, "ls", f"s3://{bucket}/{grid_key.rsplit('/', 1)[0]}/")
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.count(".png") == 65  # 64 tiles + the page
    out = tmp_path / "grid.png"
    got = s3cmd(fleet, tmp_path, "get", f"s3://{bucket}/{grid_key}", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == fleet.storage.get_bytes(plan.grids[0].outputs()["png"])

    # the same request again: nothing queued, report written directly
    fleet.storage.delete(report_key(plan.run_id))
    again = submit_plan(plan, fleet.storage, fleet.app)
    assert (again.queued_jobs, again.queued_tasks, again.already_done) == (0, 0, 64)
    assert fleet.storage.exists(report_key(plan.run_id))


def test_grids_default_size_two_pages_via_cli(fleet: Fleet) -> None:
    r = fleet.cli("submit", "grids", "--model", "vgg16-hed", "--layers",
                  "block1_conv1,block1_conv2", "--filters", "all", "--steps", "20", "--wait",
                  "--timeout", str(WAIT_S))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "128 jobs queued" in r.stdout
    plan = plan_grids("vgg16-hed", "block1_conv1,block1_conv2", "all",
                      PatternParams(64, 20), fleet.settings)
    assert len(plan.grids) == 2
    report = json.loads(fleet.storage.get_bytes(report_key(plan.run_id)))
    assert report["complete"] and report["counts"]["done"] == 128
    for grid in plan.grids:
        sub = type(plan)(plan.kind, plan.model, grid.tile_jobs(), [grid])
        check_grid(fleet, sub, 64)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sample_photos():
        shutil.copy(p, folder / p.name)
    shutil.copy(folder / "chelsea.png", folder / "zz-copy-of-cat.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    return folder


def test_heatmaps(fleet: Fleet, photo_folder: Path, tmp_path: Path) -> None:
    n = len(sample_photos())  # distinct real photos; + a duplicate and a corrupt file
    plan = plan_heatmaps([str(photo_folder)], "efficientnet-lite0", None, None, fleet.settings)
    assert len(plan.inputs) == n + 2 and len(plan.jobs) == n + 1  # the duplicate is one job
    res = submit_plan(plan, fleet.storage, fleet.app)
    assert res.queued_jobs == n + 1 and res.uploaded == n + 1
    report = wait_for_run(fleet.storage, plan.run_id, WAIT_S, progress=False)
    assert report["complete"]
    assert report["counts"]["done"] == n and report["counts"]["failed"] == 1
    by_name = {j["name"]: j for j in report["jobs"]}
    assert by_name["broken.jpg"]["status"] == "failed"
    assert "bad image" in by_name["broken.jpg"]["error"]
    (dup_names,) = report["duplicates"].values()
    assert sorted(dup_names) == ["chelsea.png", "zz-copy-of-cat.png"]

    batches = []
    for job in plan.jobs:
        if job.name == "broken.jpg":
            continue
        photo = decode_image((photo_folder / job.name).read_bytes())
        h, w = photo.shape[:2]
        out = job.outputs()
        assert png(fleet.storage, out["heatmap"]).shape == (224, 224, 3)  # the model's square
        assert png(fleet.storage, out["overlay"]).shape == (h, w, 3)
        rec = json.loads(fleet.storage.get_bytes(out["record"]))
        assert len(rec["top"]) == 3 and rec["image_size"] == [w, h]
        batches.append(rec["batch"])
    assert max(batches) > 1, batches
    print(f"grad-cam batch sizes: {batches}")
    # the duplicate photo was uploaded and computed once
    inputs = fleet.storage.list_keys("inputs/")
    assert len(inputs) == n + 1
    assert sum("/gradcam/" in k and k.endswith("record.json")
               for k in fleet.storage.list_keys("results/")) == n

    again = submit_plan(plan, fleet.storage, fleet.app)
    assert (again.queued_jobs, again.queued_tasks, again.uploaded) == (0, 0, 0)

    # status and fetch through the CLI
    st = fleet.cli("status", plan.run_id)
    assert st.returncode == 0, st.stderr
    assert f"{n} done, 1 failed" in st.stdout and "broken.jpg" in st.stdout
    dest = tmp_path / "fetched"
    fe = fleet.cli("fetch", plan.run_id, str(dest))
    assert fe.returncode == 0, fe.stderr
    assert (dest / "runs" / plan.run_id / "index.html").is_file()
    assert (dest / plan.jobs[0].outputs()["overlay"]).is_file()
    gallery = (dest / "runs" / plan.run_id / "index.html").read_text()
    assert "../../results/" in gallery


def test_invalid_request_queues_nothing(fleet: Fleet, photo_folder: Path) -> None:
    import redis

    runs_before = fleet.storage.list_keys("runs/")
    r = fleet.cli("submit", "heatmaps", str(photo_folder), "--model", "efficientnet-lite0",
                  "--class", "no-such-class-xyz")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error:" in r.stderr
    r = fleet.cli("submit", "grids", "--model", "vgg16-hed", "--layers", "block1_conv1",
                  "--filters", "0:999")
    assert r.returncode == 2 and "out of range" in r.stderr, r.stderr
    r = fleet.cli("submit", "grids", "--layers", "no_such_layer")
    assert r.returncode == 2 and "error:" in r.stderr, r.stderr
    assert fleet.storage.list_keys("runs/") == runs_before
    client = redis.Redis.from_url(fleet.env["CONVATLAS_BROKER_URL"])
    assert client.llen("convatlas") == 0


def test_help_is_light_and_worker_log_has_no_secrets(fleet: Fleet) -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\n"
        "from convatlas.producer.fleet_cli import fleet_app\n"
        "r = CliRunner().invoke(fleet_app, ['submit', 'grids', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'boto3') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    log = fleet.log()
    assert "convatlas.filter_pattern" in log
    for secret in fleet.secrets:
        assert secret and secret not in log


# --- worker crash: late acks + visibility timeout bring the tasks back ---------------------


def test_worker_killed_mid_run_is_redelivered(
    redis_server, s3_server, tmp_path: Path  # noqa: ANN001
) -> None:
    """SIGKILL a worker holding unacked tasks; a new worker gets them after the visibility
    timeout (15 s here) and the run completes with no tile lost."""
    import redis

    from convatlas.workers.config import make_app
    from tests.pipeline_fixtures import (
        fleet_env,
        s3_storage,
        settings_from,
        start_worker,
        stop_worker,
    )

    env = fleet_env(redis_server, s3_server, f"crash-{tmp_path.name[-12:]}", tmp_path / "cache",
                    db=12, visibility_timeout=15)
    settings = settings_from(env)
    storage = s3_storage(s3_server, settings.s3_prefix)
    app = make_app(settings)
    app.control.purge()
    client = redis.Redis.from_url(env["CONVATLAS_BROKER_URL"])
    plan = plan_grids("vgg16-hed", "block1_conv1", "0:64", PatternParams(48, 10), settings)
    res = submit_plan(plan, storage, app)
    assert res.queued_jobs == 64
    first = start_worker(env, tmp_path / "worker-a.log")
    try:
        # Kill once the queue is drained into the worker's unacked set: kombu's Redis transport
        # pops a message (BRPOP) before it records it as unacked, so a kill in that instant
        # loses the message (a re-submission would queue it again); not what this tests.
        for _ in range(300):
            held = client.hlen("unacked")
            time.sleep(0.1)
            if client.llen("convatlas") == 0 and held > 0 and client.hlen("unacked") == held:
                break
        else:
            pytest.fail("the worker never took the tasks")
        first.kill()  # SIGKILL: no chance to ack or requeue
        first.wait(10)
    finally:
        stop_worker(first)
    second = start_worker(env, tmp_path / "worker-b.log")
    try:
        report = wait_for_run(storage, plan.run_id, WAIT_S, progress=False)
    finally:
        stop_worker(second)
        app.close()
    assert report["complete"] and report["counts"]["done"] == 64
    grid = json.loads(storage.get_bytes(plan.grids[0].marker))
    assert grid["missing"] == []
    def received(log: str) -> int:
        return (tmp_path / log).read_text(errors="replace").count("] received")

    # the killed worker had taken tasks it never finished; the second one ran all 64 tiles
    assert received("worker-a.log") >= 32
    assert received("worker-b.log") >= 64


# --- the batcher alone ----------------------------------------------------------------------


def _fake_jobs(n: int):  # noqa: ANN202
    from convatlas.shared.jobs import FilterJob

    return [FilterJob("vgg16-hed", "0" * 12, "block1_conv1", i) for i in range(n)]


def test_batcher_gathers_threads_into_one_call(local_storage) -> None:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    from convatlas.shared.jobs import JobResult
    from convatlas.workers.batcher import Batcher

    calls: list[int] = []

    def runner(jobs, storage):  # noqa: ANN001, ANN202
        calls.append(len(jobs))
        return [JobResult("done", {}, None, {"filter": j.filter}) for j in jobs]

    b = Batcher(local_storage, window_ms=300, max_batch=16, runner=runner)
    jobs = _fake_jobs(16)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda j: b.run(j, timeout=10), jobs))
    assert [r.info["filter"] for r in results] == list(range(16))
    assert calls == [16] and b.stats.largest == 16


def test_batcher_isolates_a_failing_job(local_storage) -> None:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    from convatlas.shared.jobs import JobResult
    from convatlas.workers.batcher import Batcher

    calls: list[int] = []

    def runner(jobs, storage):  # noqa: ANN001, ANN202
        calls.append(len(jobs))
        if any(j.filter == 3 for j in jobs):
            raise RuntimeError("filter 3 is cursed")
        return [JobResult("done", {}, None, {"filter": j.filter}) for j in jobs]

    b = Batcher(local_storage, window_ms=300, max_batch=8, runner=runner)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(b.run, j, 10) for j in _fake_jobs(8)]
    with pytest.raises(RuntimeError, match="cursed"):
        futures[3].result()
    assert [f.result().status for i, f in enumerate(futures) if i != 3] == ["done"] * 7
    assert calls == [8] + [1] * 8 and b.stats.fallbacks == 1


def test_batcher_storage_outage_fails_the_batch_once(local_storage) -> None:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    from convatlas.shared.storage import StorageUnavailable
    from convatlas.workers.batcher import Batcher

    calls: list[int] = []

    def runner(jobs, storage):  # noqa: ANN001, ANN202
        calls.append(len(jobs))
        raise StorageUnavailable("S3 is down")

    b = Batcher(local_storage, window_ms=300, max_batch=4, runner=runner)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(b.run, j, 10) for j in _fake_jobs(4)]
    for f in futures:
        with pytest.raises(StorageUnavailable):
            f.result()
    assert calls == [4]  # no job-by-job fallback against a storage that is down
