"""TensorFlow vs JAX: the same engines on both backends give the same results, on the CPU.

Each backend runs ``jax_parity_side.py`` in a process of its own (Keras's backend is per
process); the two ``.npz`` files are compared here:

- every CAM method's map: correlation ≥ 0.9999 and max |Δ| ≤ 1e-4, both model families;
- filter patterns from the same starts: final objective within 1 % per filter, same dead list;
- faithfulness metrics within 1e-3;
- dataset examples: the same top-k photos per unit, at the same positions.

Measured on this CPU the gaps are far smaller: maps ≤ 2e-6, book objectives ≤ 1e-3 relative
(lucid ≤ 0.6 % after 12 Adam steps), metrics ≤ 3e-6.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jax  # noqa: F401  (a dev dependency: missing JAX fails, never skips)
import numpy as np
import pytest

SIDE = Path(__file__).with_name("jax_parity_side.py")
ROOT = Path(__file__).resolve().parents[2]
CAM_CORR, CAM_ATOL = 0.9999, 1e-4
PATTERN_RTOL = 0.01
METRIC_ATOL = 1e-3


def vgg_classifier(path: Path) -> Path:
    """vgg16-hed's conv stack with a seeded 10-class head, saved as a user ``.keras`` file."""
    import keras

    from convatlas.shared.models.registry import get_model

    base = get_model("vgg16-hed").model
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    out = keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(seed=24),
                             name="classes")(x)
    keras.Model(base.inputs, out).save(path)
    return path


def run_side(backend: str, out: Path, classifier: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONVATLAS_BACKEND": backend}
    env.pop("KERAS_BACKEND", None)
    return subprocess.Popen([sys.executable, str(SIDE), str(out), str(classifier)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, np.ndarray]]]:
    tmp = tmp_path_factory.mktemp("jax_parity")
    classifier = vgg_classifier(tmp / "vgg_classifier.keras")
    procs = {b: run_side(b, tmp / f"{b}.npz", classifier) for b in ("tensorflow", "jax")}
    for backend, proc in procs.items():
        log, _ = proc.communicate(timeout=1500)
        assert proc.returncode == 0, f"{backend} side failed:\n{log.decode()[-4000:]}"
    yield {b: dict(np.load(tmp / f"{b}.npz")) for b in procs}


def test_each_side_ran_on_its_backend(sides: dict[str, dict[str, np.ndarray]]) -> None:
    assert str(sides["tensorflow"]["backend"]) == "tensorflow"
    assert str(sides["jax"]["backend"]) == "jax"


def _keys(sides: dict[str, dict[str, np.ndarray]], prefix: str) -> list[str]:
    keys = sorted(k for k in sides["tensorflow"] if k.startswith(prefix))
    assert keys and keys == sorted(k for k in sides["jax"] if k.startswith(prefix))
    return keys


def test_cam_maps_match(sides: dict[str, dict[str, np.ndarray]]) -> None:
    tf_side, jax_side = sides["tensorflow"], sides["jax"]
    for key in _keys(sides, "class/"):
        np.testing.assert_array_equal(tf_side[key], jax_side[key], err_msg=key)
    keys = _keys(sides, "cam/")
    assert {k.split("/")[1] for k in keys} == {"effnet", "vggcls"}
    assert len(keys) == 14  # 7 methods × 2 models
    for key in keys:
        for a, b in zip(tf_side[key], jax_side[key], strict=True):  # per photo
            assert a.shape == b.shape and a.max() > 0, key
            corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
            assert corr >= CAM_CORR, f"{key}: correlation {corr:.6f}"
            assert np.abs(a - b).max() <= CAM_ATOL, f"{key}: max |Δ| {np.abs(a - b).max():.2e}"


def test_patterns_match(sides: dict[str, dict[str, np.ndarray]]) -> None:
    tf_side, jax_side = sides["tensorflow"], sides["jax"]
    for key in _keys(sides, "pattern/"):
        a, b = tf_side[key], jax_side[key]
        if key.endswith("/dead"):
            np.testing.assert_array_equal(a, b, err_msg=key)
            continue
        scale = np.maximum(np.abs(a), np.abs(b))
        assert np.all(np.abs(a - b) <= PATTERN_RTOL * scale + 1e-6), f"{key}: {a} vs {b}"


def test_metrics_match(sides: dict[str, dict[str, np.ndarray]]) -> None:
    tf_side, jax_side = sides["tensorflow"], sides["jax"]
    keys = _keys(sides, "metric/")
    assert len(keys) == 10
    for key in keys:
        np.testing.assert_allclose(jax_side[key], tf_side[key], rtol=0, atol=METRIC_ATOL,
                                   err_msg=key)


def test_examples_match(sides: dict[str, dict[str, np.ndarray]]) -> None:
    tf_side, jax_side = sides["tensorflow"], sides["jax"]
    keys = _keys(sides, "examples/")
    assert len(keys) == 12  # (ids, score, pos) × 2 layers × 2 models
    for key in keys:
        if key.endswith("/score"):
            np.testing.assert_allclose(jax_side[key], tf_side[key], rtol=1e-4, atol=1e-4,
                                       err_msg=key)
        else:  # the same photos per unit, in the same order, at the same positions
            np.testing.assert_array_equal(jax_side[key], tf_side[key], err_msg=key)
