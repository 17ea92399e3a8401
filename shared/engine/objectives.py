"""What filter-pattern ascent maximises, and how a pattern becomes an image (``keras.ops``).

Lucid splits feature visualisation into objective × parameterisation × transforms. Here:
- objective: mean activation of one channel of a layer, per sample, so a batch optimises many
  filters at once without mixing them; optionally the pre-activation (before the layer's ReLU)
  for filters that are dead on the start image;
- parameterisation: pixels on the 0–255 scale, passed through the model's own preprocessing;
- transforms: none (the book's plain gradient ascent).
"""

from __future__ import annotations

from typing import Any

import numpy as np

RMS_EPS = 1e-5


def feature_model(model: Any, layer_name: str) -> Any:
    """A model from the input to (pre-activation, activation) of ``layer_name``.

    Conv layers with a fused activation (Keras VGG16's ``relu``) are re-applied linearly to
    expose the value before the ReLU; a standalone activation layer's input is its
    pre-activation; other layers have none (both outputs are the same).
    """
    import keras
    from keras import ops

    layer = model.get_layer(layer_name)
    post = layer.output
    pre = post
    act = getattr(layer, "activation", None)
    if hasattr(layer, "convolution_op") and act is not None and act is not keras.activations.linear:
        x = layer.input
        pre = layer.convolution_op(x, layer.kernel)
        if layer.use_bias:
            pre = pre + ops.reshape(layer.bias, (1, 1, 1, -1))
    elif type(layer).__name__ in ("Activation", "ReLU"):
        pre = layer.input
    return keras.Model(model.inputs, [pre, post], name=f"features_{layer_name}")


def channel_means(features: Any, filters: Any) -> Any:
    """Per-sample mean over space of channel ``filters[i]`` of sample i: shape (N,)."""
    from keras import ops

    means = ops.mean(features, axis=(1, 2))  # (N, C)
    return ops.take_along_axis(means, ops.expand_dims(filters, 1), axis=1)[:, 0]


def objective(pre: Any, post: Any, filters: Any, use_pre: Any) -> Any:
    """Per-sample objective; ``use_pre`` picks the pre-activation for dead filters."""
    from keras import ops

    return ops.where(use_pre, channel_means(pre, filters), channel_means(post, filters))


def rms_normalize(grads: Any) -> Any:
    """The book's ``grads / (sqrt(mean(grads²)) + 1e-5)``, computed per sample."""
    from keras import ops

    rms = ops.sqrt(ops.mean(ops.square(grads), axis=(1, 2, 3), keepdims=True))
    return grads / (rms + RMS_EPS)


def start_image(filter_index: int, size: int, seed: int) -> np.ndarray:
    """Grey noise 128 + 20·U[0,1) (the book's start), seeded per filter.

    Seeding per (seed, filter) makes a filter's pattern independent of which other filters
    share its batch, so a result's key can be derived from the job alone.
    """
    rng = np.random.default_rng([seed, filter_index])
    return (128.0 + 20.0 * rng.random((size, size, 3))).astype(np.float32)


def deprocess(x: np.ndarray) -> np.ndarray:
    """The book's ``deprocess_image``: centre, std 0.1, +0.5, clip to [0, 1], ×255, uint8."""
    x = x.astype(np.float64)
    x = x - x.mean()
    x = x / (x.std() + 1e-5)
    x = x * 0.1 + 0.5
    return (np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
