"""A 20 000-photo submission through the real CLI: the producer's memory does not grow with the
folder (it is walked, hashed, uploaded and queued a shard at a time), and the sharded manifest
holds every job once, in the order the counters use."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis as redis_lib

from convatlas.producer.plans.heatmaps import plan_heatmaps
from convatlas.shared.manifest import SHARD_SIZE, iter_jobs, iter_section, job_count, load_manifest
from convatlas.stack.harness import REPO, fleet_env, s3_storage, settings_from, tiny_photo_folder
from convatlas.stack.servers import RedisServer, SeaweedS3Server

REDIS_DB = 13  # nobody consumes this database: the queued tasks stay until the flush
SMALL, BIG = 1_000, 20_000
GROWTH_BOUND_MIB = 24  # the old producer grew by 7.1 KiB a photo: +132 MiB from SMALL to BIG


def _submit(env: dict[str, str], folder: Path, logs: Path) -> tuple[str, int]:
    """Run ``convatlas submit heatmaps folder``; (stdout, peak RSS in KiB) of that process."""
    out_path, err_path = logs / f"{folder.name}.out", logs / f"{folder.name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "convatlas.producer.cli", "submit", "heatmaps", str(folder)],
            env=env, cwd=REPO, stdout=out, stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here: its own rusage
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, out_path.read_text() + err_path.read_text()
    return out_path.read_text(), usage.ru_maxrss


@pytest.mark.timeout(1500)
def test_twenty_thousand_photos_in_bounded_memory(
    redis_server: RedisServer, s3_server: SeaweedS3Server, tmp_path: Path
) -> None:
    prefix = f"stream-{uuid.uuid4().hex[:8]}"
    env = fleet_env(redis_server, s3_server, prefix, tmp_path / "cache", db=REDIS_DB)
    client = redis_lib.Redis.from_url(env["CONVATLAS_BROKER_URL"])
    client.flushdb()
    try:
        small_out, small_kib = _submit(env, tiny_photo_folder(tmp_path / "small", SMALL, 1), tmp_path)
        big_folder = tiny_photo_folder(tmp_path / "big", BIG, 2)
        big_out, big_kib = _submit(env, big_folder, tmp_path)
        growth = (big_kib - small_kib) / 1024
        assert growth < GROWTH_BOUND_MIB, (small_kib, big_kib)
        assert f"{BIG} jobs queued" in big_out and f"{BIG} photos uploaded" in big_out, big_out

        # the same run id and jobs as the in-memory plan, in shards of SHARD_SIZE
        plan = plan_heatmaps([str(big_folder)], "efficientnet-lite0", None, None,
                             settings_from(env))
        assert f"run {plan.run_id}:" in big_out, big_out
        storage = s3_storage(s3_server, prefix)
        manifest = load_manifest(storage, plan.run_id)
        assert "jobs" not in manifest and manifest["shards"] == -(-2 * BIG // SHARD_SIZE)
        assert job_count(manifest) == BIG
        assert [d["image_sha"] for d in iter_jobs(storage, manifest)] == [
            j.image_sha for j in plan.jobs]
        assert sum(1 for _ in iter_section(storage, manifest, "inputs")) == BIG
        assert client.llen("convatlas") == SMALL + BIG  # one task per photo, nothing consumed
    finally:
        client.flushdb()
