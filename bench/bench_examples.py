#!/usr/bin/env python
"""Benchmark of dataset examples and the atlas (k = 9; by default vgg16-hed, every Conv2D layer).

    .venv/bin/python bench/bench_examples.py                 # default sizes
    .venv/bin/python bench/bench_examples.py --photos 10000 --model efficientnet-lite0 \
        --layers stem_conv,block4a_expand_conv,head_conv     # the issue's size (~35 min on 2 idle cores)
    .venv/bin/python bench/bench_examples.py --quick         # smoke check of every section

It prints one table and writes the raw measurements (``bench/raw/examples.json``, a quick run's
in the temp folder); the reading is written by hand in ``RESULTS-examples.md``.

``--fleet-preupload`` puts the photos into the fleet's bucket before its clock starts (the
producer then finds them there): the fleet figures leave the upload out.

``--model`` is any registered model (``convatlas models``), ``--layers`` a comma list of its
layers or ``all`` (every Conv2D layer, as ``convatlas examples --layers all``); every section
uses them.

Sections:

1. **Trunk**: the examples pass (``channel_maxima``: one forward pass up to the deepest chosen
   layer with every chosen layer's per-channel max and first arg-max) vs a forward-only pass of
   the same trunk (same Keras sub-model, same preprocessing, same compiled-function style; it
   returns one scalar per layer so nothing but the forward pass is timed), on the SAME decoded
   inputs (photos decoded once, beforehand), batch 32. A and B alternate inside each repeat
   (order flipped every repeat); the median ratio over repeats is reported.
2. **Local end to end**: ``convatlas examples`` in this process (``plan_examples`` +
   ``run_examples_local``) over a folder of 2-MP JPEGs made from the sample photos: hashing
   and staging the inputs, the maps (reduced JPEG decode one job ahead of the model), the
   per-layer reduce (merge + rendering the unit mosaics). Photos/s of the map phase vs the
   forward-only pass of section 1.
3. **Reducer memory**: the merge alone (``LayerState.absorb``) over synthetic batch files of a
   512-unit layer, 32 photos per batch, for 1 000 and 10 000 photos: time and the tracemalloc
   peak (NumPy arrays included), which stays flat: O(k × channels), not O(photos).
4. **Atlas**: ``build_atlas`` of the model from section 2's results (the chosen layers).
5. **Fleet end to end** (``bench/_examples_fleet.py``): the same folder through ``convatlas
   submit examples FOLDER --model M --layers L --wait`` (the CLI in a subprocess) on a real
   fleet (``convatlas.stack.harness.Fleet``: its own Redis, SeaweedFS and one ``convatlas
   worker`` at bench_pipeline.py's single-worker settings), after a warm-up: photos/s of the
   whole run and of the map phase, the worker's peak RSS, fleet ÷ local and fleet ÷ forward-only.

Run order: 1, 2, 4, 5, then 3. The photos (2 processes, deterministic per photo) are kept in
``--work`` and reused; section 2's output folder is removed at the end (``--keep-outputs``).
Every absolute time is for context only: the 2 cores are shared with other work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from measure import REPO, dump_raw, machine_info, median, raw_path, say, table

sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MODEL = "vgg16-hed"  # the default --model
PHOTO_W, PHOTO_H = 1632, 1224  # 2.0 MP
GEN_PROCESSES = 2  # photo generation

_BASES: list[np.ndarray] = []


def _gen_init() -> None:
    """A generator process: the sample photos decoded once; OpenCV on one thread (2 processes)."""
    import cv2

    from convatlas.shared.images.decode import load_image
    from convatlas.shared.samples import sample_photos

    cv2.setNumThreads(1)
    _BASES[:] = [load_image(p) for p in sample_photos()]


def _gen_photo(task: tuple[str, int, int]) -> int:
    """Photo ``i`` of ``seed``: random crop, flip, brightness, upscaled to 2 MP, JPEG quality 90;
    written under a temporary name, then renamed (a killed run leaves no half file)."""
    import cv2

    from convatlas.shared.images.encode import encode_image

    folder, i, seed = task
    rng = np.random.default_rng([seed, i])  # per photo: a grown folder stays distinct
    img = _BASES[i % len(_BASES)]
    h, w = img.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1)), int(w * rng.uniform(0.6, 1))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = img[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.clip(crop.astype(np.float32) * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
    big = cv2.resize(crop, (PHOTO_W, PHOTO_H), interpolation=cv2.INTER_CUBIC)
    dest = Path(folder) / photo_name(i)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.write_bytes(encode_image(big, "jpeg", 90).data)
    os.replace(tmp, dest)
    return i


def photo_name(i: int) -> str:
    return f"photo-{i:05d}.jpg"


def make_photos(folder: Path, n: int, seed: int = 0, processes: int = GEN_PROCESSES) -> list[Path]:
    """``n`` distinct 1632×1224 (2.0 MP) JPEGs (quality 90) from the sample photos: random
    crop, flip, brightness, then upscaled. Photo ``i`` depends only on (``seed``, ``i``), so
    the files already in ``folder`` are kept and only the missing ones are made, in
    ``processes`` processes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / photo_name(i) for i in range(n)]
    todo = [(str(folder), i, seed) for i, p in enumerate(paths) if not p.exists()]
    if not todo:
        return paths
    t = time.perf_counter()
    if len(todo) <= 8 or processes <= 1:
        _gen_init()
        for task in todo:
            _gen_photo(task)
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        with ctx.Pool(processes, initializer=_gen_init) as pool:
            for k, _ in enumerate(pool.imap_unordered(_gen_photo, todo, chunksize=8), 1):
                if k % 1000 == 0:
                    say(f"  {k} of {len(todo)} photos made")
    say(f"made {len(todo)} photos in {time.perf_counter() - t:.1f} s")
    return paths


def trunk_section(lm, layers: list[str], photos: list[Path], repeats: int) -> dict:  # noqa: ANN001
    import keras

    from convatlas.shared.engine.unit_maxima import channel_maxima
    from convatlas.shared.images.decode import decode_for_model
    from convatlas.shared.tf_env import import_tf

    tf = import_tf()
    datas = [p.read_bytes() for p in photos]
    c0 = time.process_time()  # nothing else runs in this process now: the decodes' CPU
    x_all = np.stack([decode_for_model(d, 224).model_input for d in datas])
    decode_cpu = (time.process_time() - c0) / len(datas)
    trunk = keras.Model(lm.model.inputs, [lm.model.get_layer(n).output for n in layers])
    preprocess = lm.preprocess

    @tf.function(reduce_retracing=True)
    def forward(x):  # noqa: ANN001, ANN202
        outs = trunk(preprocess(tf.cast(x, tf.float32)), training=False)
        return [tf.reduce_sum(o) for o in outs]

    batch = 32
    chunks = [x_all[i : i + batch] for i in range(0, len(x_all), batch)]

    forward_cpu = [0.0]

    def run_forward(c: np.ndarray) -> float:
        t, c0 = time.perf_counter(), time.process_time()
        [o.numpy() for o in forward(c)]
        forward_cpu[0] += time.process_time() - c0
        return time.perf_counter() - t

    def run_examples(c: np.ndarray) -> float:
        t = time.perf_counter()
        channel_maxima(lm, layers, c)
        return time.perf_counter() - t

    for c in chunks:  # trace both (and every batch shape)
        run_forward(c), run_examples(c)
    forward_cpu[0] = 0.0
    # A and B alternate batch by batch (order flipped every pair), so load from other work
    # on the shared cores hits both alike; the ratio of a repeat is total vs total
    ratios, fw, ex, pairs = [], [], [], []
    for r in range(repeats):
        tf_, te = 0.0, 0.0
        for j, c in enumerate(chunks):
            if (r + j) % 2 == 0:
                a, b = run_forward(c), run_examples(c)
            else:
                b, a = run_examples(c), run_forward(c)
            tf_, te = tf_ + a, te + b
            pairs.append(a / b)
        fw.append(len(x_all) / tf_)
        ex.append(len(x_all) / te)
        ratios.append(ex[-1] / fw[-1])
        say(f"trunk repeat {r}: forward {fw[-1]:.2f} photos/s, examples {ex[-1]:.2f} photos/s, ratio {ratios[-1]:.3f}")
    return {"photos": len(x_all), "batch": batch, "forward": fw, "examples": ex,
            "ratio": median(ratios), "ratios": ratios,
            "pair_median": median(pairs), "pairs": len(pairs),
            "decode_cpu_ms": 1000 * decode_cpu,
            "forward_cpu_ms": 1000 * forward_cpu[0] / (repeats * len(x_all))}


def local_section(photos_dir: Path, out: Path, model: str, layers: str) -> dict:
    from convatlas.producer.plans.examples import plan_examples
    from convatlas.producer.run_examples import run_examples_local
    from convatlas.shared.config import Settings
    from convatlas.shared.storage import LocalStorage

    settings = Settings.from_env()
    t = time.perf_counter()
    plan = plan_examples([str(photos_dir)], model, layers, 9, settings, LocalStorage(out), batch=32)
    plan_s = time.perf_counter() - t
    t = time.perf_counter()
    report = run_examples_local(plan, out, progress=False)
    total = time.perf_counter() - t
    records = [json.loads((out / j["outputs"]["record"]).read_text()) for j in report["jobs"]
               if j["status"] == "done"]
    photos = sum(r["photos"] for r in records)
    compute = sum(r["seconds"] for r in records)
    decode = sum(r["decode_seconds"] for r in records)
    maps_s = report["timing"]["seconds"]
    return {"photos": photos, "jobs": len(plan.jobs), "plan_seconds": plan_s, "total_seconds": total,
            "maps_seconds": maps_s, "compute_seconds": compute, "decode_seconds_sum": decode,
            "reduce_seconds": report["timing"]["reduce_seconds"],
            "render_seconds": sum(r.get("render_seconds", 0.0) for r in report["examples"]),
            "units": sum(r["units"] for r in report["examples"]),
            "failed": len(report["failed_photos"])}


def reducer_memory(photo_counts: list[int]) -> list[dict]:
    """The merge alone over synthetic batch files of a 512-unit layer."""
    from convatlas.shared.jobs.examples_reduce import LayerState
    from convatlas.shared.topk import TopK
    from convatlas.shared.unit_stats import UnitStats

    rng = np.random.default_rng(0)
    out = []
    for n in photo_counts:
        batches = []
        for b in range(0, n, 32):
            shas = [hashlib.sha256(f"{n}-{i}".encode()).hexdigest() for i in range(b, min(n, b + 32))]
            scores = rng.gamma(2.0, 10.0, (len(shas), 512)).astype(np.float32)
            pos = rng.integers(0, 14, (len(shas), 512, 2))
            batches.append(json.dumps({"batch": f"b{b}", "topk": TopK.from_scores(shas, scores, pos, 9).to_json(),
                                       "stats": UnitStats.from_scores(scores).to_json()}))
        tracemalloc.start()
        t = time.perf_counter()
        state = LayerState.empty(512, 9)
        for raw in batches:  # as the reducer does: one batch file parsed and merged at a time
            state.absorb(json.loads(raw))
        seconds = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = len(json.dumps({"topk": state.topk.to_json(), "stats": state.stats.to_json(),
                               "batches": sorted(state.batches)}))
        out.append({"photos": n, "batches": len(batches), "seconds": seconds,
                    "peak_mb": peak / 2**20, "state_kb": size / 1024})
        say(f"reducer merge: {n} photos, {len(batches)} batches: {seconds:.2f} s, peak {peak / 2**20:.1f} MB")
    return out


def atlas_section(out: Path, model: str) -> dict:
    from convatlas.shared.atlas import DirSink, build_atlas
    from convatlas.shared.storage import LocalStorage

    summary = build_atlas(LocalStorage(out), model, DirSink(out / "atlas"))
    size = sum(p.stat().st_size for p in (out / "atlas").rglob("*") if p.is_file())
    return {"seconds": summary.seconds, "layers": summary.layers, "units": summary.units,
            "photos": summary.photos, "files": summary.files, "mb": size / 2**20}


def report(r: dict) -> str:
    """The run's figures as one plain table (section, measure, value)."""
    t, loc, atl, f = r["trunk"], r["local"], r["atlas"], r["fleet"]
    fw = median(t["forward"])
    maps_rate = loc["photos"] / loc["maps_seconds"]
    compute_rate = loc["photos"] / loc["compute_seconds"]
    rows: list[tuple[str, str, str]] = [
        ("1 trunk", f"forward-only photos/s ({t['photos']} photos, batch {t['batch']})", f"{fw:.2f}"),
        ("1 trunk", "examples pass photos/s", f"{median(t['examples']):.2f}"),
        ("1 trunk", "examples / forward-only (target >= 0.9; repeats)",
         f"{t['ratio']:.3f} ({', '.join(f'{x:.3f}' for x in t['ratios'])})"),
        ("1 trunk", f"median of {t['pairs']} batch pairs", f"{t['pair_median']:.3f}"),
        ("2 local", "plan / maps / compute / decodes (sum) / reduce / render s",
         " / ".join(f"{loc[k]:.1f}" for k in ("plan_seconds", "maps_seconds", "compute_seconds",
                                               "decode_seconds_sum", "reduce_seconds",
                                               "render_seconds"))),
        ("2 local", f"map phase photos/s ({loc['photos']} photos, {loc['jobs']} jobs); compute",
         f"{maps_rate:.2f}; {compute_rate:.2f}"),
        ("2 local", "map phase / forward-only (target >= 0.9)", f"{maps_rate / fw:.2f}"),
        ("2 local", "whole run photos/s (maps + reduce)",
         f"{loc['photos'] / (loc['maps_seconds'] + loc['reduce_seconds']):.2f}"),
        ("2 local", "photos failed; units", f"{loc['failed']}; {loc['units']}"),
    ]
    if "decode_cpu_ms" in t:  # the limit: every photo decoded besides the forward pass
        best = 1000 * (os.cpu_count() or 1) / (t["forward_cpu_ms"] + t["decode_cpu_ms"])
        rows.append(("2 local", "core-ms/photo decode; forward; limit with perfect overlap / "
                     "forward-only", f"{t['decode_cpu_ms']:.1f}; {t['forward_cpu_ms']:.1f}; "
                     f"{best / fw:.2f}"))
    rows += [("3 reducer", f"{m['photos']} photos, {m['batches']} batch files: s / peak MB / "
              "state KB", f"{m['seconds']:.2f} / {m['peak_mb']:.1f} / {m['state_kb']:.0f}")
             for m in r["reducer"]]
    rows.append(("4 atlas", "layers / units / photos / files / MB / seconds",
                 f"{atl['layers']} / {atl['units']} / {atl['photos']} / {atl['files']} / "
                 f"{atl['mb']:.0f} / {atl['seconds']:.1f}"))
    if f is not None:
        mk, log = f["marks"], f.get("log") or {}
        # the last marker is written after the last model batch; LastModified is floored to 1 s
        map_end = max(f.get("last_map_outcome") or mk["report"], log.get("last_batch_end", 0.0))
        loc_map_s = loc["plan_seconds"] + loc["maps_seconds"]
        loc_all = loc["photos"] / (loc_map_s + loc["reduce_seconds"])
        n = f["photos"]
        rate_all, rate_map = n / f["wall"], n / map_end
        cpu = f["cpu"]
        others = cpu["machine"] - cpu["worker"] - cpu["weed"] - cpu["redis"] - cpu["cli"]
        rows += [
            ("5 fleet", "s from the CLI's start: submitted / map phase / report / summary / exit",
             " / ".join(f"{v:.1f}" for v in (mk.get("submitted", float("nan")), map_end,
                                             mk["report"], mk["summary"], f["wall"]))),
            ("5 fleet", "photos/s: map phase; whole run", f"{rate_map:.2f}; {rate_all:.2f}"),
            ("5 fleet", "fleet / local: whole run; map phase",
             f"{rate_all / loc_all:.2f}; {rate_map / (loc['photos'] / loc_map_s):.2f}"),
            ("5 fleet", "map phase / forward-only (target >= 0.9); whole run / forward-only",
             f"{rate_map / fw:.2f}; {rate_all / fw:.2f}"),
            ("5 fleet", "worker peak RSS MiB (reset ok); with the model loaded",
             f"{f['peak_mb']:.0f} ({f['peak_reset']}); {f['rss_model_loaded_mb']:.0f}"),
            ("5 fleet", "model s (photos/s); decodes s (sum); render s",
             f"{f['model_seconds']:.1f} ({n / max(f['model_seconds'], 1e-9):.2f}); "
             f"{f['decode_seconds_sum']:.1f}; {f['render_seconds']:.1f}"),
            ("5 fleet", "CPU s: worker / SeaweedFS / Redis / CLI / others",
             " / ".join(f"{v:.0f}" for v in (cpu["worker"], cpu["weed"], cpu["redis"],
                                             cpu["cli"], others))),
            ("5 fleet", "photos failed; jobs done / failed; CLI exit",
             f"{f['failed']}; {f['counts']['done']} / {f['counts']['failed']}; "
             f"{f['returncode']}"),
        ]
    return table(("section", "measure", "value"), rows) + (
        f"\n\n(model {r['model']}, layers {','.join(r['layers'])}, {r['photos']} photos, "
        f"{r['minutes']:.1f} min)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=600)
    ap.add_argument("--model", default=MODEL, help=f"a registered model (default {MODEL})")
    ap.add_argument("--layers", default=None,
                    help="comma-separated layers of --model, or 'all' (every Conv2D layer; the "
                         "default; with --quick: the first Conv2D layer and the one at a third "
                         "of the depth, whose mosaics are cheap to render)")
    ap.add_argument("--trunk-photos", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warm-photos", type=int, default=32, help="fleet warm-up photos (other seed)")
    ap.add_argument("--no-fleet", action="store_true", help="skip section 5")
    ap.add_argument("--fleet-preupload", action="store_true",
                    help="upload the photos into the fleet's bucket before its clock starts")
    ap.add_argument("--fleet-timeout", type=float, default=7200.0)
    ap.add_argument("--keep-outputs", action="store_true", help="keep section 2's output folder")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, every section")
    ap.add_argument("--raw", type=Path, default=None,
                    help="raw JSON (default: bench/raw/examples.json; --quick: the temp folder)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "convatlas-bench-examples")
    args = ap.parse_args()
    if args.quick:
        args.photos, args.trunk_photos, args.repeats = 40, 32, 1
        args.warm_photos = min(args.warm_photos, 8)
    from convatlas.producer.plans.plan import PlanError
    from convatlas.producer.plans.validate import parse_layers
    from convatlas.shared.models.registry import get_model, get_spec, layer_table

    try:
        side = get_spec(args.model).input_size or 224  # as plan_examples
        table = layer_table(args.model)
        conv = [i.name for i in table if i.kind == "Conv2D"]
        layers_arg = args.layers or (",".join([conv[0], conv[len(conv) // 3]]) if args.quick
                                     else "all")
        chosen = parse_layers(args.model, layers_arg)
    except (LookupError, PlanError, ValueError) as exc:
        ap.error(str(exc))
    index = {info.name: k for k, info in enumerate(table)}
    layers = sorted((name for name, _ in chosen), key=index.__getitem__)  # trunk order
    channels = dict(chosen)
    layers_csv = ",".join(layers)

    t_all = time.perf_counter()
    say(f"making {args.photos} photos")
    photos = make_photos(args.work / "photos", args.photos)
    folder = args.work / f"set-{args.photos}"
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos:  # the folder of exactly these photos (links, no copies)
        if not (folder / p.name).exists():
            os.link(p, folder / p.name)
    warm = None
    if not args.no_fleet:
        warm = args.work / f"warm-{args.warm_photos}"
        make_photos(warm, args.warm_photos, seed=1)
    lm = get_model(args.model)
    say(f"model {args.model}, layers {layers_csv}")
    say("trunk section")
    trunk = trunk_section(lm, layers, photos[: args.trunk_photos], args.repeats)
    out = args.work / f"out-{args.photos}-{int(time.time())}"
    say(f"local section into {out}")
    local = local_section(folder, out, args.model, layers_csv)
    say(f"local: {json.dumps(local)}")
    say("atlas")
    atlas = atlas_section(out, args.model)
    say(f"atlas: {json.dumps(atlas)}")
    if not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    fleet = None
    if not args.no_fleet:
        import _examples_fleet

        assert warm is not None
        fleet = _examples_fleet.fleet_section(folder, warm, args.model, layers_csv, args.work,
                                              args.fleet_timeout, args.fleet_preupload)
        say("fleet: " + json.dumps({k: v for k, v in fleet.items() if k != "batches"}))
    say("reducer memory")
    reducer = reducer_memory([1000, 10000] if not args.quick else [100, 400])
    raw = {**machine_info(), "photos": args.photos, "minutes": (time.perf_counter() - t_all) / 60,
           "model": args.model, "layers": layers, "channels": channels, "conv_layers": conv,
           "layer_index": index, "side": side,
           "trunk": trunk, "local": local, "reducer": reducer, "atlas": atlas, "fleet": fleet}
    dump_raw(raw_path("examples", args.quick, args.raw), raw)
    print(report(raw))


if __name__ == "__main__":
    main()
