"""Heatmap outputs people can keep: overlay format and size options, env defaults, CAM methods,
all part of the result key; refusals before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from convatlas.producer.plans.heatmaps import cam_settings
from convatlas.producer.plans.plan import PlanError
from convatlas.shared.config import Settings
from convatlas.shared.images.decode import decode_image
from convatlas.shared.jobs import GradcamJob, job_from_dict
from convatlas.shared.samples import sample_photos

SHA = "ab" * 32


def test_settings_are_part_of_the_key_and_survive_json() -> None:
    base = GradcamJob("efficientnet-lite0", "w" * 12, SHA)
    others = [GradcamJob("efficientnet-lite0", "w" * 12, SHA, overlay_format="png"),
              GradcamJob("efficientnet-lite0", "w" * 12, SHA, overlay_max_side=1024),
              GradcamJob("efficientnet-lite0", "w" * 12, SHA, methods=("gradcam", "hirescam")),
              GradcamJob("efficientnet-lite0", "w" * 12, SHA, methods=("gradcam++",))]
    prefixes = {j.prefix for j in [base, *others]}
    assert len(prefixes) == 5
    for j in [base, *others]:
        assert job_from_dict(json.loads(json.dumps(j.to_dict()))) == j
    assert base.outputs()["overlay"].endswith("/overlay.jpg")
    two = others[2].outputs()
    assert two["overlay:hirescam"].endswith("/overlay-hirescam.jpg") and "cam:hirescam" in two


def test_env_defaults_and_refusals() -> None:
    env = Settings(overlay_format="webp", overlay_max_side=800)
    assert cam_settings({}, env) == {"methods": ("gradcam",), "overlay_format": "webp",
                                     "overlay_max_side": 800, "metrics": ()}
    assert cam_settings({"overlay_format": "jpg", "overlay_max_side": 0}, env)["overlay_format"] == "jpeg"
    for bad in ({"overlay_format": "gif"}, {"overlay_max_side": -1}, {"method": "gradcam,nope"}):
        with pytest.raises(PlanError):
            cam_settings(bad, Settings())


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "convatlas.producer.cli", "heatmaps", *args, "-q"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_formats_sizes_and_methods_from_the_cli(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photo = cv2.imread(str(sample_photos()[1]))
    cv2.imwrite(str(src / "big.jpg"), cv2.resize(photo, (1600, 1200)))
    out = tmp_path / "out"
    default = _cli(str(src), "--out", str(out))
    small = _cli(str(src), "--out", str(out), "--method", "gradcam,eigencam",
                 env={"CONVATLAS_OVERLAY_FORMAT": "webp", "CONVATLAS_OVERLAY_MAX_SIDE": "400"})
    assert default.returncode == 0 and small.returncode == 0, default.stderr + small.stderr
    records = {json.loads(p.read_text())["overlay"]["format"]: p
               for p in out.glob("results/**/record.json")}
    assert set(records) == {"jpeg", "webp"}  # two settings, two keys, nothing overwritten
    full = records["jpeg"].parent
    assert decode_image((full / "overlay.jpg").read_bytes()).shape == (1200, 1600, 3)
    assert decode_image((full / "heatmap.png").read_bytes()).shape == (224, 224, 3)
    capped = records["webp"].parent
    assert decode_image((capped / "overlay.webp").read_bytes()).shape == (300, 400, 3)
    assert decode_image((capped / "overlay-eigencam.webp").read_bytes()).shape == (300, 400, 3)
    rec = json.loads(records["webp"].read_text())
    assert rec["image_size"] == [1600, 1200] and set(rec["methods"]) == {"gradcam", "eigencam"}
    size_in = (src / "big.jpg").stat().st_size
    size_out = sum(p.stat().st_size for p in full.iterdir() if p.suffix in (".jpg", ".png"))
    assert size_out < 1.5 * size_in  # outputs people can keep


def test_bad_options_are_refused_before_any_work(tmp_path: Path) -> None:
    for args in (["--overlay-format", "gif"], ["--method", "gradcam,magic"],
                 ["--overlay-max-side", "-5"]):
        r = _cli(str(sample_photos()[0]), "--out", str(tmp_path / "o"), *args)
        assert r.returncode == 2 and "error:" in r.stderr, (args, r.stderr)
        assert not (tmp_path / "o").exists()
