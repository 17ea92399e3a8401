"""Weights once for the fleet, against a real SeaweedFS: ``convatlas models fetch --from FILE``
puts a weights file in the bucket; a fresh process with an empty cache and no internet loads
it from there, and its sha256 is in the result keys; tampered and truncated files are refused;
a model whose weights are nowhere says which command provides them.

No machine here can download Keras's ImageNet files, so the file is a random-weights
MobileNetV3Small saved as Keras saves its weights, accepted through the test-only override of
the published hash (production checks Keras's own)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from convatlas.stack.servers import SeaweedS3Server

NAME = "mobilenetv3-small"
PROLOGUE = (
    "import sys\n"
    "from convatlas.shared.models import app_weights\n"
    "app_weights.override_published_hash({name!r}, {md5!r})\n"
)
CLI = "from convatlas.producer.cli import main\nsys.argv = ['convatlas', *sys.argv[1:]]\nmain()\n"

MAKE_FILE = r"""
import sys, h5py
from keras.src.legacy.saving import legacy_h5_format
from convatlas.shared.models import applications
model = applications.build(sys.argv[1])
with h5py.File(sys.argv[2], "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)
"""

LOAD = r"""
import json, numpy as np, h5py
from convatlas.shared.config import Settings
from convatlas.shared.models import app_weights
from convatlas.shared.models.registry import get_model
from convatlas.producer.plans.grids import plan_grids
from convatlas.shared.engine.patterns import PatternParams

def no_internet(app):
    raise AssertionError("downloaded from the internet although the bucket has the file")
app_weights._download = no_internet
settings = Settings.from_env()
plan = plan_grids(sys.argv[1], "conv", "0:4", PatternParams(), settings)
cached_before = sorted(p.name for p in (settings.cache_dir / "models").glob("*")) if (settings.cache_dir / "models").exists() else []
lm = get_model(sys.argv[1])
kernel = lm.model.get_layer("conv").get_weights()[0]
found = []
with h5py.File(sys.argv[2]) as f:
    f["conv"].visititems(lambda n, d: found.append(np.asarray(d)) if getattr(d, "shape", None) == kernel.shape else None)
print(json.dumps({"weights_id": lm.weights_id, "keys": [j.prefix for j in plan.jobs][:2],
                  "cached_before_load": cached_before,
                  "cached": sorted(p.name for p in (settings.cache_dir / "models").glob("*")),
                  "same_kernel": len(found) == 1 and bool(np.array_equal(found[0], kernel))}))
"""


def _run(code: str, args: list[str], env: dict[str, str], md5: str = "") -> subprocess.CompletedProcess[str]:
    prologue = PROLOGUE.format(name=NAME, md5=md5) if md5 else "import sys\n"
    return subprocess.run([sys.executable, "-c", prologue + code, *args], env=env,
                          capture_output=True, text=True, timeout=600)


def _env(server: SeaweedS3Server, prefix: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVATLAS_", "AWS_", "KERAS_"))}
    env.update(
        CONVATLAS_S3_ENDPOINT=server.endpoint_url, CONVATLAS_S3_BUCKET="convatlas-test",
        CONVATLAS_S3_PREFIX=prefix, AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key, CONVATLAS_CACHE_DIR=str(home / "cache"),
        KERAS_HOME=str(home / "keras"),
        # no internet: any download attempt fails at once
        HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
    )
    return env


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "weights_mobilenet_v3_small_224_1.0_float.h5"
    out = subprocess.run([sys.executable, "-c", MAKE_FILE, NAME, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return path


def test_fetch_from_file_then_a_fresh_process_loads_it_from_the_bucket(
    s3_server: SeaweedS3Server, weights_file: Path, tmp_path: Path
) -> None:
    from convatlas.shared.storage import S3Storage

    prefix = f"t-{uuid.uuid4().hex[:12]}"
    S3Storage("convatlas-test", prefix, endpoint_url=s3_server.endpoint_url, access_key=s3_server.access_key,
              secret_key=s3_server.secret_key, create_bucket=True)
    md5 = hashlib.md5(weights_file.read_bytes()).hexdigest()
    sha = hashlib.sha256(weights_file.read_bytes()).hexdigest()

    fetched = _run(CLI, ["models", "fetch", NAME, "--from", str(weights_file)], _env(s3_server, prefix, tmp_path / "a"), md5)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert f"models/weights/sha256/{sha}" in fetched.stdout

    listed = _run(CLI, ["models", NAME], _env(s3_server, prefix, tmp_path / "b"), md5)
    assert "available offline (weights in the bucket)" in listed.stdout, listed.stdout + listed.stderr[-1500:]

    loaded = _run(LOAD, [NAME, str(weights_file)], _env(s3_server, prefix, tmp_path / "c"), md5)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    got = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert got["weights_id"] == sha
    assert got["cached_before_load"] == []  # planning read the bucket's record, not the file
    assert got["cached"] == [weights_file.name]
    assert got["same_kernel"]
    assert all(f"/{sha[:12]}/" in key for key in got["keys"]), got["keys"]


def test_a_celery_worker_runs_a_new_name_with_weights_only_from_the_bucket(
    redis_server: Any, s3_server: SeaweedS3Server, weights_file: Path, tmp_path: Path
) -> None:
    """The fleet on a keras.applications name: ``models fetch --from FILE`` puts the weights in
    the bucket; a real Celery worker with an empty cache and no internet then computes a grid
    page and Grad-CAM heatmaps of that model, loading the weights from the bucket once; every
    result key carries the file's sha256."""
    from convatlas.stack.harness import Fleet

    md5 = hashlib.md5(weights_file.read_bytes()).hexdigest()
    sha = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    no_internet = {k: v for k, v in _env(s3_server, "", tmp_path).items()
                   if k.lower().endswith("_proxy") or k == "KERAS_HOME"}
    (tmp_path / "fleet").mkdir()
    fleet = Fleet.create(redis_server, s3_server, tmp_path / "fleet", db=7, concurrency=8, extra_env={
        **no_internet, "CONVATLAS_TEST_PUBLISHED_HASH": f"{NAME}:{md5}",
        "PYTHONPATH": str(Path(__file__).with_name("published_hash"))})
    try:
        fetched = subprocess.run([sys.executable, "-m", "convatlas.producer.cli", "models", "fetch", NAME,
                                  "--from", str(weights_file)], env=fleet.env, capture_output=True,
                                 text=True, timeout=300)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr[-2000:]
        cache = Path(fleet.env["CONVATLAS_CACHE_DIR"]) / "models"
        for f in cache.glob("*"):  # the fetch's own copy: the worker must find none
            f.unlink()
        fleet.start_worker()
        grid = fleet.cli("submit", "grids", "--model", NAME, "--layers", "conv", "--filters", "0:4",
                         "--size", "32", "--steps", "2", "--wait", "--timeout", "600", timeout=660)
        assert grid.returncode == 0 and "4 done" in grid.stdout, grid.stdout + grid.stderr[-2000:]
        photos = Path(__file__).parents[2] / "samples" / "photos"
        heat = fleet.cli("submit", "heatmaps", str(photos), "--model", NAME, "--wait",
                         "--timeout", "600", timeout=660)
        n = len(list(photos.iterdir()))
        assert heat.returncode == 0 and f"{n} done" in heat.stdout, heat.stdout + heat.stderr[-2000:]
    finally:
        fleet.close()
    log = fleet.logs()
    assert "downloaded from the internet" not in log and "Downloading" not in log
    assert sorted(p.name for p in cache.glob("*")) == [weights_file.name]  # from the bucket, once
    results = [k for k in fleet.bucket_keys() if "/results/" in k and f"/{NAME}/" in k]
    assert results and all(f"/{sha[:12]}/" in k for k in results), results[:4]


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_damaged_files_are_refused(s3_server: SeaweedS3Server, weights_file: Path, tmp_path: Path, damage: str) -> None:
    md5 = hashlib.md5(weights_file.read_bytes()).hexdigest()
    data = bytearray(weights_file.read_bytes())
    if damage == "tampered":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    bad = tmp_path / weights_file.name
    bad.write_bytes(bytes(data))
    out = _run(CLI, ["models", "fetch", NAME, "--from", str(bad)], _env(s3_server, f"t-{uuid.uuid4().hex[:8]}", tmp_path), md5)
    assert out.returncode == 1
    message = " ".join(out.stderr.split())
    assert ("is not the md5 Keras publishes" if damage == "tampered" else "truncated") in message, message


def test_a_model_without_weights_anywhere_names_the_fetch_command(s3_server: SeaweedS3Server, tmp_path: Path) -> None:
    code = ("from convatlas.shared.config import Settings\n"
            "from convatlas.producer.plans.validate import model_weights_id\n"
            "from convatlas.producer.plans.plan import PlanError\n"
            "try:\n    model_weights_id('resnet50', Settings.from_env())\n"
            "except PlanError as exc:\n    print(exc)\n")
    out = _run(code, [], _env(s3_server, f"t-{uuid.uuid4().hex[:8]}", tmp_path))
    assert "convatlas models fetch resnet50" in out.stdout, out.stdout + out.stderr[-2000:]
