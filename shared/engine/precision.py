"""Numeric precision of the engines' network passes: float32 (default) or bfloat16.

Both engines spend nearly all their time in the network's convolutions, which already run at the
CPU's float32 FLOP peak. A bfloat16 pass does the same work at twice the rate on hardware with
native bf16 arithmetic (x86 AVX512_BF16 or AMX, recent GPUs) and is much slower where bf16 is
emulated. Only the network runs in bfloat16 (Keras's ``mixed_bfloat16`` policy: float32 weights,
bf16 compute); the pixels, the objective, the gradient normalisation and the heatmap arithmetic
stay float32. Results differ from float32 ones (a few 1e-3 relative per pass), so the precision is
part of every result key.

This module is only the value domain; making a bf16 clone of a model is
``convatlas.shared.models.mixed``, and whether this CPU has bf16 units is ``convatlas.shared.cpu``.
"""

from __future__ import annotations

PRECISIONS = ("float32", "bfloat16")
DEFAULT = "float32"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def key_suffix(precision: str) -> str:
    """Text added to result keys: none for float32 (keys made before this option stay valid)."""
    return "" if check_precision(precision) == DEFAULT else "-bf16"
