"""One side of the TensorFlow-vs-JAX parity tests (``test_jax_parity.py``).

Keras picks its backend once per process, so each side runs in a process of its own:
``CONVATLAS_BACKEND=<tensorflow|jax> python tests/engine/jax_parity_side.py OUT.npz CLASSIFIER``
computes the same small workload and saves every figure to ``OUT.npz`` for the test to compare:

- every CAM method's maps on the sample photos, on efficientnet-lite0 and on ``CLASSIFIER`` (a
  ``.keras`` file: vgg16-hed's conv stack with a small seeded head, so the VGG16 family has
  classes; it also exercises user model files);
- filter patterns from the same starts: vgg16-hed book style at block1/3/5 and lucid at block3,
  efficientnet-lite0 at a layer of its own (not a plain stride-1 conv);
- the faithfulness metrics of fixed, seeded heatmaps (identical inputs on both sides);
- the dataset examples' top-k per unit (photo ids, scores, positions) over the sample photos
  and their mirror images, on both models.

Small on purpose (2 photos, a few filters and steps): CI runs it on a busy 2-core machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PHOTOS = 2
METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam")
CAM_MODELS = (("effnet", "efficientnet-lite0", 16), ("vggcls", None, 8))  # tag, model, scorecam cap
PATTERNS = (  # tag, model, layer, filters, style, steps
    ("hed_b1", "vgg16-hed", "block1_conv1", list(range(8)), "book", 10),
    ("hed_b3", "vgg16-hed", "block3_conv1", list(range(4)), "book", 8),
    ("hed_b5", "vgg16-hed", "block5_conv3", list(range(6)), "book", 4),
    ("hed_lucid", "vgg16-hed", "block3_conv1", [0, 1], "lucid", 12),
    ("eff_relu", "efficientnet-lite0", "block2a_expand_relu", list(range(4)), "book", 6),
)
EXAMPLES = (  # tag, model, side, layers
    ("hed", "vgg16-hed", 112, ("block2_conv2", "block4_conv3")),
    ("effnet", "efficientnet-lite0", 224, ("block3b_add", "top_activation")),
)
TOP_K = 3


def seeded_heatmaps(n: int) -> list[np.ndarray]:
    """7×7 maps in [0, 1], the same on both sides (no ties to rank differently)."""
    rng = np.random.default_rng(24)
    return [rng.random((7, 7)).astype(np.float32) for _ in range(n)]


def run(out: Path, classifier: Path) -> None:
    from convatlas.shared.backend_select import select_backend

    select_backend()  # CONVATLAS_BACKEND → KERAS_BACKEND, before Keras is imported
    import keras

    from convatlas.shared.engine.cam_runner import cams
    from convatlas.shared.engine.faithfulness import METRICS, faithfulness
    from convatlas.shared.engine.patterns import PatternParams, filter_patterns
    from convatlas.shared.images.decode import load_image
    from convatlas.shared.models.registry import get_model
    from convatlas.shared.samples import sample_photos

    res: dict[str, np.ndarray] = {"backend": np.array(keras.backend.backend())}
    photos = [load_image(p) for p in sample_photos()[:PHOTOS]]
    for tag, name, cap in CAM_MODELS:
        print("cams", tag, file=sys.stderr, flush=True)
        lm = get_model(name or f"{classifier}#caffe")
        per_photo = cams(lm, photos, methods=METHODS, batch_size=PHOTOS, scorecam_channels=cap)
        for m in METHODS:
            res[f"cam/{tag}/{m}"] = np.stack([p[m].heatmap for p in per_photo])
        res[f"class/{tag}"] = np.array([p["gradcam"].class_index for p in per_photo])
    for tag, name, layer, filters, style, steps in PATTERNS:
        print("patterns", tag, file=sys.stderr, flush=True)
        params = PatternParams(size=64, steps=steps, style=style)
        pats = filter_patterns(get_model(name), layer, filters, params)
        res[f"pattern/{tag}/final"] = np.array([p.final_activation for p in pats])
        res[f"pattern/{tag}/start"] = np.array([p.start_activation for p in pats])
        res[f"pattern/{tag}/dead"] = np.array([p.dead for p in pats])
    print("metrics", file=sys.stderr, flush=True)
    effnet = get_model("efficientnet-lite0")
    classes = [int(c) for c in res["class/effnet"]]
    figures = faithfulness(effnet, photos, seeded_heatmaps(PHOTOS), classes, METRICS,
                           batch_size=PHOTOS, pass_batch=16)
    for key in ("probability", "deletion_auc", "insertion_auc", "road", "avg_drop",
                "masked_probability"):
        res[f"metric/{key}"] = np.array([f[key] for f in figures], np.float64)
    for key in ("deletion_curve", "insertion_curve", "road_morf", "road_lerf"):
        res[f"metric/{key}"] = np.array([f[key] for f in figures], np.float64)
    from convatlas.shared.engine.unit_maxima import top_examples

    photos = [load_image(p) for p in sample_photos()]
    mirrored = [np.ascontiguousarray(im[:, ::-1]) for im in photos]
    named = [(f"photo{i}", im) for i, im in enumerate(photos + mirrored)]
    for tag, name, side, layers in EXAMPLES:
        print("examples", tag, file=sys.stderr, flush=True)
        tops = top_examples(get_model(name), named, layers, TOP_K, side=side, batch=4)
        for layer, top in tops.items():
            res[f"examples/{tag}/{layer}/ids"] = np.array(
                [[top.shas[p] for p in row] for row in top.photo])
            res[f"examples/{tag}/{layer}/score"] = top.score
            res[f"examples/{tag}/{layer}/pos"] = top.pos
    np.savez(out, **res)


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
