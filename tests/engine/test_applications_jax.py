"""keras.applications families on the JAX backend: the same one-image Grad-CAM, 4-filter
pattern page and examples pass as ``test_applications.py``, in a pytest subprocess whose Keras
runs on JAX (``CONVATLAS_BACKEND=jax``; Keras's backend is fixed per process). One network per
kind of block: residual (ResNet50), hard-swish with squeeze-excite (MobileNetV3 small),
MBConv with its own rescaling layers (EfficientNet-B0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax  # noqa: F401  (a dev dependency: missing JAX fails, never skips)

ROOT = Path(__file__).resolve().parents[2]
ON_JAX = ("resnet50", "mobilenetv3-small", "efficientnet-b0")


def test_families_run_gradcam_patterns_and_examples_on_jax() -> None:
    test = "tests/engine/test_applications.py::test_each_family_runs_gradcam_patterns_and_examples"
    env = {k: v for k, v in os.environ.items() if k not in ("CONVATLAS_BACKEND", "KERAS_BACKEND")}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *[f"{test}[{name}]" for name in ON_JAX]],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env={**env, "CONVATLAS_BACKEND": "jax"})
    assert r.returncode == 0 and f"{len(ON_JAX)} passed" in r.stdout, r.stdout[-4000:] + r.stderr[-2000:]
