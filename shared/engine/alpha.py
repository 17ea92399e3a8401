"""MaCo's transparency map as pictures: the accumulated |gradient| scaled to 0–1 by its 99th
percentile (a few extreme pixels do not darken the rest), as grey, and as the pattern's alpha."""

from __future__ import annotations

import numpy as np

__all__ = ["alpha_image", "encode_rgba_png", "normalised_alpha", "with_alpha"]


def normalised_alpha(alpha: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1]: ``alpha`` divided by its 99th percentile, clipped (zeros stay zero)."""
    a = np.asarray(alpha, np.float64)
    top = float(np.percentile(a, 99))
    return np.clip(a / top, 0.0, 1.0) if top > 0 else np.zeros_like(a)


def alpha_image(alpha: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grey: the transparency map."""
    return np.rint(255 * normalised_alpha(alpha)).astype(np.uint8)


def with_alpha(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8: the pattern with the transparency map as its alpha channel."""
    a = np.rint(255 * normalised_alpha(alpha)).astype(np.uint8)
    return np.concatenate([image[..., :3], a[..., None]], axis=-1)


def encode_rgba_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 4) uint8 image (Pillow; ``encode_png`` writes RGB and grey only)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba, np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()
