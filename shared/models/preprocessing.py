"""Input preprocessing per model family, written with ``keras.ops``.

They take float RGB pixels on the 0–255 scale (N, H, W, 3) and return what the network expects.
Being plain ops, they run inside compiled gradient loops too: filter patterns are optimised in
pixel space and pass through the model's own preprocessing, so one start image (grey noise around
128) means the same thing for every model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def caffe(x: Any) -> Any:
    """VGG16 / HED: RGB→BGR, minus the ImageNet mean (keras ``vgg16.preprocess_input``)."""
    from keras import ops

    return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=x.dtype)


def efficientnet_lite(x: Any) -> Any:
    """EfficientNet-Lite (TF reference): (x − 127) / 128."""
    return (x - 127.0) / 128.0


def tf_style(x: Any) -> Any:
    """Inception/MobileNet style: scale to [-1, 1]."""
    return x / 127.5 - 1.0


def torch_style(x: Any) -> Any:
    """torchvision style: [0, 1] then ImageNet mean/std."""
    from keras import ops

    mean = ops.convert_to_tensor((0.485, 0.456, 0.406), dtype=x.dtype)
    std = ops.convert_to_tensor((0.229, 0.224, 0.225), dtype=x.dtype)
    return (x / 255.0 - mean) / std


def identity(x: Any) -> Any:
    """The model does its own preprocessing (or wants raw 0–255 pixels)."""
    return x


PREPROCESSORS: dict[str, Callable[[Any], Any]] = {
    "caffe": caffe,
    "efficientnet-lite": efficientnet_lite,
    "tf": tf_style,
    "torch": torch_style,
    "none": identity,
}
