"""Per-pattern quality scores (issue 27 item 2), batched beside the ascent: how far a unit's
pattern can be trusted.

* ``robustness``: the activation kept under random jitter, scale and rotation (Lucid's transforms,
  ``ROBUSTNESS_DRAWS`` draws per pattern, seeded per filter): the mean over the draws of the
  transformed image's objective divided by the untransformed one's, clipped to [0, 1]; 0 when the
  pattern does not drive its unit at all (nothing to keep). A pattern that only works at one
  exact position and scale scores low.
* ``peak``: the unit's largest activation over positions on the pattern, the same statistic as
  the dataset examples' score (max over positions), so the atlas can say what fraction of its
  best natural example's activation the pattern reaches (``activation_reached``).

Not here yet: seed stability (needs 3 ascents) and path similarity (needs the examples'
activations at the layers below): see the issue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convatlas.shared.engine.transforms import apply_transforms, draw_uniforms, lucid_transforms

ROBUSTNESS_DRAWS = 8
ROBUSTNESS_SEED = 7919  # apart from the ascent's own draws


def pattern_scores(
    features: Callable[[Any, Any], tuple[Any, Any]], preprocess: Callable[[Any], Any],
    x: np.ndarray, filters: list[int], draws: int = ROBUSTNESS_DRAWS,
) -> tuple[np.ndarray, np.ndarray]:
    """(robustness, peak), each (N,) float32, for pixels ``x`` (N, S, S, 3) of ``filters``."""
    from keras import ops

    size = int(x.shape[1])
    transforms = lucid_transforms(size)
    f = ops.convert_to_tensor(np.asarray(filters, np.int32))
    xt = ops.convert_to_tensor(np.asarray(x, np.float32))
    _, post = features(preprocess(xt), f)
    post = ops.convert_to_numpy(post)
    base = post.mean(axis=(1, 2))
    peak = post.max(axis=(1, 2)).astype(np.float32)
    u = np.stack([draw_uniforms(transforms, i, draws, ROBUSTNESS_SEED) for i in filters])
    kept = np.zeros(len(filters))
    for d in range(draws):
        moved = apply_transforms(transforms, xt, ops.convert_to_tensor(u[:, d]))
        _, post_t = features(preprocess(moved), f)
        kept += ops.convert_to_numpy(post_t).mean(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(base > 0, kept / draws / np.where(base > 0, base, 1.0), 0.0)
    return np.clip(ratio, 0.0, 1.0).astype(np.float32), peak
