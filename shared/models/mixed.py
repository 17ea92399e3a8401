"""A model computing in another precision with the same weights (Keras ``mixed_bfloat16`` clone)."""

from __future__ import annotations

from typing import Any

from convatlas.shared.engine.precision import DEFAULT, check_precision


def with_precision(model: Any, precision: str) -> Any:
    """``model`` itself for float32; otherwise a clone computing in bfloat16 with the same weights.

    Layers keep float32 variables (``mixed_bfloat16``), so the clone's weights equal the original's.
    A model whose layers cannot be rebuilt from their config (custom layers) is refused clearly.
    """
    if check_precision(precision) == DEFAULT:
        return model
    import keras

    def as_mixed(layer: Any) -> Any:
        config = layer.get_config()
        # bare ops in the graph (ConvNeXt's ``x + y``) take no dtype: they follow their inputs
        if isinstance(layer, keras.layers.Layer) and type(layer).__name__ != "InputLayer":
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=as_mixed)
        clone.set_weights(model.get_weights())
    except Exception as exc:  # custom layers without a config, subclassed models
        raise ValueError(f"{model.name} cannot run in bfloat16 ({exc}); use float32") from exc
    return clone
