"""What filter-pattern ascent maximises, and how a pattern becomes an image (``keras.ops``).

Lucid splits feature visualisation into objective × parameterisation × transforms. Here:
- objective: mean activation of one channel of a layer, per sample, so a batch optimises many
  filters at once without mixing them; optionally the pre-activation (before the layer's ReLU)
  for filters that are dead on the start image;
- parametrisation (``param/``): how the optimised variable becomes pixels on the 0–255 scale,
  which then pass through the model's own preprocessing; the book's is the pixels themselves,
  started from ``start_image`` (``param/pixels.py``), Lucid's a decorrelated Fourier-space image
  (``param/fourier.py``);
- transforms (``transforms.py``): applied to the pixels before the network, sampled per sample
  and per step; none for the book's plain gradient ascent, Lucid's jitter/scale/rotate for lucid.
The optimiser step (``optimisers.py``: the book's RMS-normalised step here, ``rms_normalize``, or
Adam) and the defaults are part of a style (``styles.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

RMS_EPS = 1e-5


def feature_model(model: Any, layer_name: str) -> Any:
    """A model from the input to (pre-activation, activation) of ``layer_name``, all channels.

    Conv layers with a fused activation (Keras VGG16's ``relu``) are re-applied linearly to
    expose the value before the ReLU (the activation is then applied to it, so the conv runs
    once); a standalone activation layer's input is its pre-activation; other layers have none
    (both outputs are the same).
    """
    import keras
    from keras import ops

    layer = model.get_layer(layer_name)
    post = layer.output
    pre = post
    act = getattr(layer, "activation", None)
    if hasattr(layer, "convolution_op") and act is not None and act is not keras.activations.linear:
        x = layer.input
        pre = layer.convolution_op(x, ops.cast(layer.kernel, x.dtype))
        if layer.use_bias:
            pre = pre + ops.reshape(ops.cast(layer.bias, x.dtype), (1, 1, 1, -1))
        post = act(pre)
    elif type(layer).__name__ in ("Activation", "ReLU"):
        pre = layer.input
    return keras.Model(model.inputs, [pre, post], name=f"features_{layer_name}")


def _selectable_conv(layer: Any) -> bool:
    return (
        type(layer).__name__ == "Conv2D"
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and getattr(layer, "groups", 1) == 1
        and layer.data_format == "channels_last"
    )


def selected_channels(model: Any, layer_name: str) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``(x, filters) → (pre, post)``: channel ``filters[i]`` of sample i only, (N, H, W) each.

    Sample i needs one channel, so at a stride-1 Conv2D target the N selected kernels are
    gathered and applied as one depthwise convolution over the batch folded into channels:
    the target layer costs 1/C of the full convolution, and its gradient likewise (this is what
    makes block1_conv1 fast). Other layers compute all channels and pick one. The outputs are
    float32 whatever the model's compute precision.
    """
    import keras
    from keras import ops

    layer = model.get_layer(layer_name)
    if not _selectable_conv(layer):
        features = feature_model(model, layer_name)

        def all_channels(x: Any, filters: Any) -> tuple[Any, Any]:
            pre, post = features(x, training=False)
            return _pick(ops.cast(pre, "float32"), filters), _pick(ops.cast(post, "float32"), filters)

        return all_channels

    trunk = keras.Model(model.inputs, layer.input, name=f"trunk_{layer_name}")
    act = layer.activation or keras.activations.linear
    kh, kw, cin, _ = layer.kernel.shape

    def one_channel(x: Any, filters: Any) -> tuple[Any, Any]:
        # (N, H, W, Cin); a bfloat16 trunk hands over here: the one-channel conv is cheap in float32
        h = ops.cast(trunk(x, training=False), "float32")
        n, hh, ww = ops.shape(h)[0], ops.shape(h)[1], ops.shape(h)[2]
        k = ops.take(layer.kernel, filters, axis=3)  # (kh, kw, Cin, N)
        k = ops.reshape(ops.transpose(k, (0, 1, 3, 2)), (kh, kw, -1, 1))  # (kh, kw, N·Cin, 1)
        folded = ops.reshape(ops.transpose(h, (1, 2, 0, 3)), (1, hh, ww, -1))  # (1, H, W, N·Cin)
        y = ops.depthwise_conv(folded, k, strides=1, padding=layer.padding)
        yh, yw = ops.shape(y)[1], ops.shape(y)[2]
        pre = ops.transpose(ops.sum(ops.reshape(y, (yh, yw, n, cin)), axis=-1), (2, 0, 1))
        if layer.use_bias:
            pre = pre + ops.reshape(ops.take(layer.bias, filters), (-1, 1, 1))
        return pre, act(pre)

    return one_channel


def _pick(features: Any, filters: Any) -> Any:
    """(N, H, W, C) → (N, H, W): channel ``filters[i]`` of sample i."""
    from keras import ops

    idx = ops.reshape(filters, (-1, 1, 1, 1))
    return ops.take_along_axis(features, ops.broadcast_to(idx, (*ops.shape(features)[:3], 1)), axis=3)[..., 0]


def objective(pre: Any, post: Any, use_pre: Any) -> Any:
    """Per-sample mean of the selected maps (N, H, W); ``use_pre`` picks the pre-activation
    for dead filters."""
    from keras import ops

    return ops.where(use_pre, ops.mean(pre, axis=(1, 2)), ops.mean(post, axis=(1, 2)))


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
