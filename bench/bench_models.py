#!/usr/bin/env python
"""The keras.applications families on this CPU: Grad-CAM photos/s, a 64-filter pattern page at
block-3 depth, and model load time from the bucket against a local weights file.

    .venv/bin/python bench/bench_models.py            # full run (every family; minutes each)
    .venv/bin/python bench/bench_models.py --smoke    # one small family, tiny sizes: checks the script

Random weights (no machine here can download Keras's ImageNet files): throughput does not
depend on the weights. The load-time rows put a random-weights file of the model in a bucket
(a local directory, ``CONVATLAS_STORAGE_DIR``, so the figure is the copy and the checks, not the
network) and time ``get_model`` with an empty cache against building from the file in the
cache. The raw JSON goes to ``bench/raw/models.json``; the reading is written by hand in
``RESULTS-models.md``. Never run it while other work is timing things on the same cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from measure import dump_raw, machine_info, median, raw_path, say, table

FAMILY_MODELS = {
    "vgg": "vgg16", "resnet": "resnet50", "resnet_v2": "resnet50v2", "mobilenet": "mobilenetv2",
    "mobilenet_v3": "mobilenetv3-large", "efficientnet": "efficientnet-b0",
    "efficientnet_v2": "efficientnetv2-b0", "convnext": "convnext-tiny", "densenet": "densenet121",
    "inception": "inception-v3", "xception": "xception", "nasnet": "nasnet-mobile",
}
SMOKE = {"mobilenet_v3": "mobilenetv3-small"}


def block3_layer(name: str) -> str:
    """The Conv2D about a third of the way down: block-3 depth (VGG16's block3_conv1 region)."""
    from convatlas.shared.models.registry import layer_table

    convs = [i.name for i in layer_table(name) if i.kind == "Conv2D"]
    return convs[len(convs) // 3]


def write_weights(name: str, path: Path) -> str:
    """A random-weights file as Keras saves its ImageNet ones; its md5 (the test override)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from convatlas.shared.models import applications

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, applications.build(name))
    return hashlib.md5(path.read_bytes()).hexdigest()


def load_times(name: str, work: Path, repeats: int) -> dict[str, float]:
    """Seconds for get_model: weights from the bucket (empty cache) vs the file in the cache."""
    from convatlas.shared.config import Settings
    from convatlas.shared.models import app_weights, registry
    from convatlas.shared.models.applications import get_app

    app = get_app(name)
    work.mkdir(parents=True, exist_ok=True)
    src = work / app.weights_name
    app_weights.override_published_hash(name, write_weights(name, src))
    os.environ["CONVATLAS_STORAGE_DIR"] = str(work / "bucket")
    os.environ["KERAS_HOME"] = str(work / "keras-empty")
    app_weights.put_in_bucket(name, src, Settings.from_env())
    out: dict[str, list[float]] = {"bucket": [], "local": []}
    for i in range(repeats):
        for where in ("bucket", "local"):
            cache = work / f"cache-{where}-{i}"
            if where == "local":
                (cache / "models").mkdir(parents=True)
                (cache / "models" / app.weights_name).write_bytes(src.read_bytes())
            os.environ["CONVATLAS_CACHE_DIR"] = str(cache)
            registry._loaded.pop(name, None)
            t0 = time.perf_counter()
            registry.get_model(name, Settings.from_env())
            out[where].append(time.perf_counter() - t0)
    return {k: median(v) for k, v in out.items()}


def throughput(name: str, photos: int, filters: int, steps: int, size: int, rounds: int) -> dict[str, Any]:
    from convatlas.shared.engine.cam_runner import grad_cam
    from convatlas.shared.engine.patterns import PatternParams, filter_patterns
    from convatlas.shared.models import applications
    from convatlas.shared.models.registry import LoadedModel, get_spec, layer_table

    spec = get_spec(name)
    lm = LoadedModel(spec, applications.build(name), "0" * 64, 0.0)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(photos)]
    grad_cam(lm, imgs[:2], batch_size=photos)  # compile
    cam_s = median([_timed(lambda: grad_cam(lm, imgs, batch_size=photos)) for _ in range(rounds)])
    layer = block3_layer(name)
    side = max(size, 80) if spec.input_size and spec.input_size > 224 else size
    params = PatternParams(size=side, steps=steps)
    # a page is at most the layer's filters (MobileNetV2's block-3 conv has 32)
    n = min(filters, next(i.channels for i in layer_table(name) if i.name == layer))
    filter_patterns(lm, layer, list(range(2)), PatternParams(size=side, steps=1))  # compile
    page_s = median([_timed(lambda: filter_patterns(lm, layer, list(range(n)), params)) for _ in range(rounds)])
    return {"photos_per_s": photos / cam_s, "layer": layer, "page_s": page_s, "size": side,
            "filters": n}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="one small family, tiny sizes")
    ap.add_argument("--raw", type=Path, default=None)
    args = ap.parse_args()
    models = SMOKE if args.smoke else FAMILY_MODELS
    knobs = (dict(photos=2, filters=4, steps=2, size=32, rounds=1) if args.smoke
             else dict(photos=16, filters=64, steps=40, size=64, rounds=3))
    rows, raw = [], {"machine": machine_info(), "knobs": knobs, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        for family, name in models.items():
            say(f"{family}: {name}")
            got = throughput(name, **knobs)
            got.update(load_times(name, Path(tmp) / name, 1 if args.smoke else 3))
            raw["models"][name] = got
            rows.append((family, name, f"{got['photos_per_s']:.2f}",
                         f"{got['layer']} @ {got['size']} px, {got['filters']} filters",
                         f"{got['page_s']:.1f}", f"{got['bucket']:.2f}", f"{got['local']:.2f}"))
    print(table(("family", "model", "Grad-CAM photos/s", "page layer", f"page (≤ {knobs['filters']} filters) s",
                 "load from bucket s", "load from local file s"), rows))
    dump_raw(raw_path("models", args.smoke, args.raw), raw)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
