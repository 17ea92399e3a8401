"""Numeric precision of the engines' network passes: float32 (default) or bfloat16.

Both engines spend nearly all their time in the network's convolutions, which already run at the
CPU's float32 FLOP peak. A bfloat16 pass does the same work at twice the rate on hardware with
native bf16 arithmetic (x86 AVX512_BF16 or AMX, recent GPUs) and is much slower where bf16 is
emulated. Only the network runs in bfloat16 (Keras's ``mixed_bfloat16`` policy: float32 weights,
bf16 compute); the pixels, the objective, the gradient normalisation and the heatmap arithmetic
stay float32. Results differ from float32 ones (a few 1e-3 relative per pass), so the precision is
part of every result key.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

PRECISIONS = ("float32", "bfloat16")
DEFAULT = "float32"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def key_suffix(precision: str) -> str:
    """Text added to result keys: none for float32 (keys made before this option stay valid)."""
    return "" if check_precision(precision) == DEFAULT else "-bf16"


@cache
def native_bfloat16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512_BF16 or AMX): bf16 is fast only there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


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
        if type(layer).__name__ != "InputLayer":
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=as_mixed)
        clone.set_weights(model.get_weights())
    except Exception as exc:  # custom layers without a config, subclassed models
        raise ValueError(f"{model.name} cannot run in bfloat16 ({exc}); use float32") from exc
    return clone
