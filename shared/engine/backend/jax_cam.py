"""JAX: the compiled passes of the CAM family, siblings of ``tf_cam`` with the same interfaces.

- ``build_cam_pass``: ONE forward (+ backward for gradient methods) pass for a batch;
- ``build_scored_passes``: batched forward passes of perturbed inputs (Score-CAM, the
  faithfulness metrics);
- ``jit``: a ``keras.ops`` function compiled by XLA (ROAD's imputation loop).

Each pass is a ``jax.jit`` function of the model's weights (``model.stateless_call``), so the
weights are arguments, not constants in the program. The gradient of the class score with
respect to the target layer's activations is ``jax.grad`` with respect to a zero added to that
layer's output (``_FeatureProbe``): the trunk runs once, forward, and the backward pass stops at
the target layer, as TensorFlow's tape does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from convatlas.shared.engine.heatmap import method_outputs, select_scores


def _weights(model: Any) -> tuple[list[Any], list[Any]]:
    return [v.value for v in model.trainable_variables], [
        v.value for v in model.non_trainable_variables
    ]


def build_cam_pass(
    grad_model: Any,
    preprocess: Callable[[Any], Any],
    gradient_methods: Sequence[Any] = (),
    activation_methods: Sequence[Any] = (),
    return_features: bool = False,
) -> Callable[..., Any]:
    """Compile one pass for a batch: ``(x, class_index) → dict``; see ``tf_cam.build_cam_pass``.

    The gradient at the target layer is ``∂score/∂delta`` at ``delta = 0``, where ``delta`` is
    added to that layer's output inside the call (``_FeatureProbe``): Keras cannot cut a general
    functional model at an inner layer, and this needs no cut.
    """
    import jax
    import jax.numpy as jnp

    gradient_methods = tuple(gradient_methods)
    activation_methods = tuple(activation_methods)
    probe = _FeatureProbe(grad_model)

    @jax.jit
    def cam_pass(x: Any, class_index: Any, trainable: Any, non_trainable: Any) -> Any:
        xp = preprocess(x)
        if gradient_methods:
            def score_of(delta: Any) -> tuple[Any, Any]:
                features, logits = probe(trainable, non_trainable, xp, delta)
                logits = jnp.asarray(logits, jnp.float32)
                score, chosen = select_scores(logits, class_index)
                return jnp.sum(score), (features, logits, chosen)

            zero = jnp.zeros(probe.features_shape(xp), probe.features_dtype)
            grads, (features, logits, chosen) = jax.grad(score_of, has_aux=True)(zero)
            grads = grads.astype(jnp.float32)
        else:
            features, logits = probe(trainable, non_trainable, xp, None)
            logits = jnp.asarray(logits, jnp.float32)
            _, chosen = select_scores(logits, class_index)
            grads = None  # forward only
        feats = jnp.asarray(features, jnp.float32)
        return method_outputs(logits, chosen, feats, grads, gradient_methods,
                              activation_methods, return_features)

    def run(x: Any, class_index: Any) -> Any:
        return cam_pass(x, class_index, *_weights(grad_model))

    return run


_deltas = threading.local()  # per thread: id(layer) → the delta added while tracing a pass


class _FeatureProbe:
    """``grad_model`` (input → [features, scores]) called statelessly, with ``delta`` added to
    the features layer's output before the head consumes it, so ``∂score/∂delta`` at 0 is the
    gradient at the target layer (the trunk's own backward pass is never needed).

    The layer's ``call`` gets a shim (once, kept) that adds this thread's delta while a pass is
    being traced and is the plain call otherwise, so other threads and models sharing the
    layer are unaffected.
    """

    def __init__(self, grad_model: Any) -> None:
        import keras

        self.model = grad_model
        spec = grad_model.outputs[0]
        self.layer = spec._keras_history.operation
        self.features_dtype = keras.backend.standardize_dtype(spec.dtype)
        _install_shim(self.layer)

    def features_shape(self, xp: Any) -> tuple[int, ...]:
        import jax

        trainable, non_trainable = _weights(self.model)
        return tuple(jax.eval_shape(lambda a: self(trainable, non_trainable, a, None)[0], xp).shape)

    def __call__(self, trainable: Any, non_trainable: Any, xp: Any, delta: Any) -> Any:
        active = getattr(_deltas, "by_layer", None)
        if active is None:
            active = _deltas.by_layer = {}
        if delta is not None:
            active[id(self.layer)] = delta
        try:
            outputs, _ = self.model.stateless_call(trainable, non_trainable, xp, training=False)
        finally:
            active.pop(id(self.layer), None)
        return outputs


_shim_lock = threading.Lock()


def _install_shim(layer: Any) -> None:
    with _shim_lock:
        if getattr(layer, "_convatlas_probe", False):
            return
        original = layer.call

        def call(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            delta = getattr(_deltas, "by_layer", {}).get(id(layer))
            return out if delta is None else out + delta

        layer.call = call
        layer._convatlas_probe = True


def build_scored_passes(
    model: Any,
    preprocess: Callable[[Any], Any],
    perturb: Callable[[Any, tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]], Any],
) -> Callable[..., Any]:
    """Compile a chunk of perturbed forward passes; see ``tf_cam.build_scored_passes`` (same
    arguments, same ``(logit, probability)`` result)."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def passes(images: Any, per_image: Any, image: Any, per_pass: Any, cls: Any, shared: Any,
               trainable: Any, non_trainable: Any) -> Any:
        x = preprocess(jnp.take(images, image, axis=0))
        gathered = tuple(jnp.take(a, image, axis=0) for a in per_image)
        inputs = perturb(x, gathered, tuple(per_pass), tuple(shared))
        logits, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
        logits = jnp.asarray(logits, jnp.float32)
        idx = jnp.asarray(cls, jnp.int32)[:, None]
        logit = jnp.take_along_axis(logits, idx, axis=1)[:, 0]
        prob = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), idx, axis=1)[:, 0]
        return logit, prob

    def run(images: Any, per_image: Any, image: Any, per_pass: Any, cls: Any, shared: Any) -> Any:
        return passes(images, tuple(per_image), image, tuple(per_pass), cls, tuple(shared),
                      *_weights(model))

    return run


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (``keras.ops`` code) compiled whole with XLA, callable inside the passes above."""
    import jax

    return jax.jit(fn)
