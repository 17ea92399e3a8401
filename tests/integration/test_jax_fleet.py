"""A fleet whose worker computes on JAX (``CONVATLAS_BACKEND=jax``), no mocks: real Redis,
SeaweedFS and a ``celery worker``; its start-up log names the backend and devices, and its
patterns and heatmaps are recorded as JAX's, under the same keys a TensorFlow worker writes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import jax  # noqa: F401  (a dev dependency: missing JAX fails, never skips)
import pytest

from convatlas.shared.samples import sample_photos
from convatlas.stack.harness import Fleet
from convatlas.stack.servers import RedisServer, SeaweedS3Server
from tests.pipeline_fixtures import started_fleet

REDIS_DB = 10  # this module's own database: other tests' workers must not take its tasks


@pytest.fixture(scope="module")
def jax_fleet(
    redis_server: RedisServer, s3_server: SeaweedS3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    with started_fleet(redis_server, s3_server, tmp_path_factory.mktemp("jax_fleet"), db=REDIS_DB,
                       extra_env={"CONVATLAS_BACKEND": "jax"}) as f:
        yield f


def _records(fleet: Fleet, part: str) -> list[dict]:
    st = fleet.storage
    return [json.loads(st.get_bytes(k)) for k in st.list_keys("results/")
            if part in k and k.endswith(".json") and "grid" not in k.rsplit("/", 1)[-1]]


def test_a_jax_worker_runs_patterns_and_heatmaps(jax_fleet: Fleet, tmp_path: Path) -> None:
    assert "backend: jax" in jax_fleet.log() and "cpu:0" in jax_fleet.log()
    r = jax_fleet.cli("submit", "grids", "--model", "vgg16-hed", "--layers", "block1_conv1",
                      "--filters", "0:4", "--size", "32", "--steps", "3", "--wait",
                      "--timeout", "300", timeout=420)
    assert r.returncode == 0, r.stdout + r.stderr
    patterns = [p for p in _records(jax_fleet, "/block1_conv1/") if "filter" in p]
    assert len(patterns) == 4 and {p["backend"] for p in patterns} == {"jax"}

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(sample_photos()[0], folder / sample_photos()[0].name)
    r = jax_fleet.cli("submit", "heatmaps", str(folder), "--model", "efficientnet-lite0",
                      "--method", "gradcam,eigencam", "--wait", "--timeout", "300", timeout=420)
    assert r.returncode == 0, r.stdout + r.stderr
    heat = [h for h in _records(jax_fleet, "/gradcam/") if "heatmap_peak" in h]
    assert len(heat) == 1 and heat[0]["backend"] == "jax" and heat[0]["heatmap_peak"] > 0
