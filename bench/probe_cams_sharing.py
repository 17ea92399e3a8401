#!/usr/bin/env python
"""Quick check of the CAM sharing targets (issue 13): Grad-CAM alone, the 5 gradient methods
together, a forward-only pass and Eigen-CAM, batch 32 on EfficientNet-Lite0, interleaved rounds.

    .venv/bin/python bench/probe_cams_sharing.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from convatlas.shared.tf_env import import_tf

    import_tf()
    import keras

    from convatlas.shared.engine.backend import cam_builders, constant, to_numpy
    from convatlas.shared.engine.cam_runner import cams, model_input
    from convatlas.shared.images.decode import load_image
    from convatlas.shared.models.registry import get_model
    from convatlas.shared.samples import sample_photos

    lm = get_model("efficientnet-lite0")
    photos = [load_image(p) for p in sample_photos()]
    imgs = [photos[i % len(photos)] for i in range(32)]
    gradient = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
    grad_model = keras.Model(lm.model.inputs, [lm.model.get_layer("top_activation").output,
                                                lm.model.output])
    forward = cam_builders().build_cam_pass(grad_model, lm.preprocess)
    cls_t = constant(np.full(32, -1, np.int32))

    def fwd() -> None:  # the same photo resizing as a cams() call, then a forward-only pass
        b = np.stack([model_input(lm, im) for im in imgs])
        to_numpy(forward(constant(b), cls_t)["logits"])

    cases = {
        "gradcam alone": lambda: cams(lm, imgs, None, None, ("gradcam",), batch_size=32),
        "5 gradient methods": lambda: cams(lm, imgs, None, None, gradient, batch_size=32),
        "forward-only": fwd,
        "eigencam": lambda: cams(lm, imgs, None, None, ("eigencam",), batch_size=32),
    }
    for c in cases.values():
        c()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 4):
        for k, c in cases.items():
            t0 = time.perf_counter()
            c()
            times[k].append(time.perf_counter() - t0)
    rate = {k: 32 / statistics.median(v) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:<20} {rate[k]:6.2f} images/s  runs {', '.join(f'{x:.3f}' for x in v)}")
    print(f"together / alone {rate['5 gradient methods'] / rate['gradcam alone']:.2f}x, "
          f"eigencam / forward {rate['eigencam'] / rate['forward-only']:.2f}x")


if __name__ == "__main__":
    main()
