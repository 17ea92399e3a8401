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

Scored later, over stored results (``convatlas.shared.atlas.scores``, at atlas build time, no
ascent recomputed), from :func:`layer_profiles` of the stored pattern PNGs and example patches:

* ``seed_stability``: :func:`seed_stability` of the unit's patterns for seeds s, s+1, s+2 (the same
  style and other parameters). The unit's own spatial map is not compared: the optimum of a
  mean-over-positions objective is translation invariant, so two seeds draw the same motif at
  shifted phases and a pixelwise map correlation would call a perfectly stable unit unstable.
  Instead each seed's pattern is described by its *response profile* at the unit's layer (the
  spatial mean of every channel of that layer, the layer's units acting as probe features), and
  the score is the mean pairwise Pearson correlation of the three profiles: 1 when the seeds
  draw the same feature, near 0 for unrelated images.
* ``path_similarity``: :func:`path_similarity`: at each conv layer below the unit, the cosine
  between the pattern's profile and one top-k example patch's (the receptive-field crop the unit
  saw, resized to the pattern's side); averaged over the layers, then the best over the examples
  (``path_similarity``, the path of the closest natural example) and the mean over them
  (``path_similarity_mean``). Profiles after ReLU are non-negative, so the cosine is in [0, 1].
  A pattern whose best score is below ``PATH_FLAG`` drives its unit through a path unlike any of
  its natural examples (Geirhos et al. 2024) and is flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convatlas.shared.engine.transforms import apply_transforms, draw_uniforms, lucid_transforms

ROBUSTNESS_DRAWS = 8
ROBUSTNESS_SEED = 7919  # apart from the ascent's own draws
SEEDS = 3  # patterns compared for seed stability: seeds s, s+1, s+2
#: Below this best-example path similarity a pattern is flagged. Post-ReLU channel means are
#: non-negative, so even unrelated images score above 0; 0.5 marks a clearly different path (a
#: heuristic threshold, not yet calibrated on a large model).
PATH_FLAG = 0.5
PROFILE_BATCH = 32


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


def seed_stability(profiles: np.ndarray) -> float:
    """The mean pairwise Pearson correlation of the rows of ``profiles`` (S ≥ 2, D): each row one
    seed's response profile (or any activation map, flattened). A constant row (no signal) has
    correlation 0 with everything; identical rows give 1."""
    p = np.asarray(profiles, np.float64).reshape(len(profiles), -1)
    if len(p) < 2:
        raise ValueError("seed stability needs at least 2 seeds")
    c = p - p.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(c, axis=1)
    ok = norm > 1e-12 * max(1.0, float(np.abs(p).max()))
    c = np.where(ok[:, None], c / np.where(ok, norm, 1.0)[:, None], 0.0)
    corr = c @ c.T
    iu = np.triu_indices(len(p), k=1)
    return float(np.clip(corr[iu].mean(), -1.0, 1.0))


def path_similarity(pattern: list[np.ndarray], examples: list[np.ndarray]) -> tuple[float, float]:
    """(best, mean) over the examples of the layer-averaged cosine between the pattern's profile
    and the example's: ``pattern[l]`` is (D_l,), ``examples[l]`` (K, D_l) at layer l."""
    if not pattern or len(pattern) != len(examples):
        raise ValueError("one pattern and one examples profile per layer")
    per_layer = []
    for a, b in zip(pattern, examples, strict=True):
        a = np.asarray(a, np.float64).ravel()
        b = np.asarray(b, np.float64).reshape(len(b), -1)
        denom = np.linalg.norm(a) * np.linalg.norm(b, axis=1)
        per_layer.append(np.where(denom > 0, b @ a / np.where(denom > 0, denom, 1.0), 0.0))
    per_example = np.mean(per_layer, axis=0)  # (K,)
    return float(per_example.max()), float(per_example.mean())


def layer_profiles(
    model: Any, layers: list[str], preprocess: Callable[[Any], Any], x: np.ndarray,
    batch: int = PROFILE_BATCH,
) -> list[np.ndarray]:
    """Per layer of ``layers``, (N, C) float32: the spatial mean of each channel's output on the
    pixels ``x`` (N, S, S, 3), computed in batches of ``batch`` through one multi-output model."""
    import keras
    from keras import ops

    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in layers])
    out: list[list[np.ndarray]] = [[] for _ in layers]
    for i in range(0, len(x), batch):
        xt = ops.convert_to_tensor(np.asarray(x[i : i + batch], np.float32))
        got = probe(preprocess(xt), training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        for j, g in enumerate(got):
            out[j].append(ops.convert_to_numpy(ops.mean(ops.cast(g, "float32"), axis=(1, 2))))
    return [np.concatenate(o).astype(np.float32) if o else np.zeros((0, 0), np.float32) for o in out]
