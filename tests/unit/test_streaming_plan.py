"""The streamed heatmaps plan (a spool file read back shard by shard) is the in-memory plan:
the same jobs, inputs, refused files and run id; the sharded manifest reads back in order."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from convatlas.producer.plans.heatmaps import plan_heatmaps
from convatlas.producer.plans.plan import PlanError, run_id_of
from convatlas.producer.plans.spool import spool_heatmaps
from convatlas.producer.staging import write_manifest
from convatlas.shared.config import Settings
from convatlas.shared.manifest import iter_jobs, iter_section, job_count, load_manifest
from convatlas.shared.storage import LocalStorage

N = 2300  # photos: 2301 inputs + 2300 jobs + 1 refused file = 5 shards of 1000 entries


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(N):
        sub = root / f"d{i % 3}"
        sub.mkdir(exist_ok=True)
        ok, png = cv2.imencode(".png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        (sub / f"p{i:05d}.png").write_bytes(png.tobytes())
    shutil.copy(root / "d0" / "p00000.png", root / "d1" / "same-photo-again.png")
    (root / "notes.txt").write_text("not a photo")
    return root


def test_spooled_plan_is_the_in_memory_plan(folder: Path) -> None:
    settings = Settings()
    plan = plan_heatmaps([str(folder)], "efficientnet-lite0", None, None, settings)
    spooled = spool_heatmaps([str(folder)], "efficientnet-lite0", None, None, settings)
    try:
        assert len(plan.jobs) == N and len(plan.inputs) == N + 1  # the copy is one job
        assert plan.rejected == [("notes.txt", "ignored: suffix .txt is not an image type")]
        assert spooled.run_id == plan.run_id and spooled.total == N
        shards = list(spooled.shards())
        assert len(shards) == spooled.shard_count() == 5
        offset = 0
        for s in shards:
            assert s.offset == offset
            offset += len(s.jobs)
        assert [j.to_dict() for s in shards for j in s.jobs] == [j.to_dict() for j in plan.jobs]
        assert [f.sha256 for s in shards for f in s.inputs] == [f.sha256 for f in plan.inputs]
        assert [r for s in shards for r in s.rejected] == plan.rejected
        assert list(spooled.iter_rejected()) == plan.rejected
        assert spooled.header()["jobs_total"] == N and spooled.header()["shards"] == 5
    finally:
        spooled.close()


def test_run_id_ignores_order_and_sees_every_job(folder: Path) -> None:
    plan = plan_heatmaps([str(folder / "d0"), str(folder / "d1")], "efficientnet-lite0", None,
                         None, Settings())
    assert run_id_of("heatmaps", plan.jobs[::-1]) == plan.run_id
    assert run_id_of("heatmaps", plan.jobs[1:]) != plan.run_id
    assert run_id_of("grids", plan.jobs) != plan.run_id


def test_sharded_manifest_reads_back_in_order(folder: Path, tmp_path: Path) -> None:
    plan = plan_heatmaps([str(folder)], "efficientnet-lite0", None, None, Settings())
    storage = LocalStorage(tmp_path)
    write_manifest(plan, storage)
    header = load_manifest(storage, plan.run_id)
    assert "jobs" not in header and job_count(header) == N
    assert list(iter_jobs(storage, header)) == [j.to_dict() for j in plan.jobs]
    assert len(list(iter_section(storage, header, "inputs"))) == N + 1
    inline = plan.manifest()  # a manifest of before sharding reads the same way
    assert list(iter_jobs(storage, inline)) == inline["jobs"] and job_count(inline) == N


def test_nothing_found_is_refused_before_any_spool(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no images found"):
        spool_heatmaps([str(tmp_path)], "efficientnet-lite0", None, None, Settings())
    with pytest.raises(PlanError, match="no such file"):
        spool_heatmaps([str(tmp_path / "missing")], "efficientnet-lite0", None, None, Settings())


def test_no_job_is_queued_before_the_inputs_it_reads(folder: Path) -> None:
    """A submission uploads a shard's inputs, then queues its jobs: every input a job reads
    must be in that shard or an earlier one. An in-memory plan (examples: one job reads 32
    photos from anywhere) puts every input first; the spool writes a photo before its job."""
    settings = Settings()
    plan = plan_heatmaps([str(folder)], "efficientnet-lite0", None, None, settings)
    spooled = spool_heatmaps([str(folder)], "efficientnet-lite0", None, None, settings)
    try:
        for p in (plan, spooled):
            seen: set[str] = set()
            for s in p.shards():
                seen |= {f.sha256 for f in s.inputs}
                for job in s.jobs:
                    assert job.image_sha in seen, (type(p).__name__, s.offset, job.name)
        shards = list(plan.shards())
        first_job = next(n for n, s in enumerate(shards) if s.jobs)
        assert all(not s.inputs and not s.rejected for s in shards[first_job:])
        assert len(shards) == plan.shard_count() == 3 + 3
        assert [j.to_dict() for s in shards for j in s.jobs] == [j.to_dict() for j in plan.jobs]
        assert [f.sha256 for s in shards for f in s.inputs] == [f.sha256 for f in plan.inputs]
        assert [s.offset for s in shards[first_job:]] == [0, 1000, 2000]
    finally:
        spooled.close()
