"""Checks for scripts/compose-e2e.sh, run on the host with the project's venv.

    check_run.py grid DEST RUN --tile 32 --filters 64     a fetched grid run
    check_run.py heatmaps DEST RUN --photos samples/photos a fetched Grad-CAM run
    check_run.py flower URL                               Flower: 401 without, 200 with credentials
                                                          (FLOWER_USER, FLOWER_PASSWORD from the environment)

DEST is what `convatlas fetch RUN DEST` wrote (same key layout as the bucket). Every check
prints one line and exits non-zero with the reason when it fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image, ImageOps

GRID, MARGIN = 8, 5  # pages of 8×8 tiles, 5 px margins (shared/render.py)


def fail(msg: str) -> None:
    print(f"check failed: {msg}", file=sys.stderr)
    sys.exit(1)


def load_report(dest: Path, run: str) -> dict:
    path = dest / "runs" / run / "report.json"
    if not path.is_file():
        fail(f"no report at {path}")
    report = json.loads(path.read_text())
    if not report.get("complete"):
        fail(f"run {run} not complete: {report.get('counts')}")
    if not (dest / "runs" / run / "index.html").is_file():
        fail("no gallery index.html")
    return report


def image_size(path: Path, formats: tuple[str, ...] = ("PNG",)) -> tuple[int, int]:
    """Size of a fully decoded RGB image in one of ``formats`` (a truncated file fails)."""
    if not path.is_file():
        fail(f"missing output {path}")
    with Image.open(path) as im:
        if im.format not in formats or im.mode != "RGB":
            fail(f"{path}: {im.format} {im.mode}, expected RGB {'/'.join(formats)}")
        im.load()
        return im.size


def check_grid(dest: Path, run: str, tile: int, filters: int) -> None:
    report = load_report(dest, run)
    counts = report["counts"]
    want = {"done": filters, "failed": 0, "pending": 0, "total": filters}
    if {k: counts.get(k) for k in want} != want:
        fail(f"grid counts {counts}, expected {want}")
    pages = -(-filters // (GRID * GRID))
    if len(report["grids"]) != pages or any(g["status"] != "done" for g in report["grids"]):
        fail(f"grids {[(g['png'], g['status']) for g in report['grids']]}, expected {pages} done")
    side = GRID * tile + (GRID - 1) * MARGIN
    for g in report["grids"]:
        if image_size(dest / g["png"]) != (side, side):
            fail(f"{g['png']}: not {side}×{side}")
    for job in report["jobs"]:
        if image_size(dest / job["outputs"]["png"]) != (tile, tile):
            fail(f"{job['outputs']['png']}: not {tile}×{tile}")
    print(f"grid run {run}: {counts['done']}/{filters} tiles done, {pages} page(s) {side}×{side} px, "
          f"tiles {tile}×{tile} px")


def check_heatmaps(dest: Path, run: str, photos: Path) -> None:
    report = load_report(dest, run)
    sizes = {}
    for p in sorted(photos.iterdir()):
        with Image.open(p) as im:
            sizes[p.name] = ImageOps.exif_transpose(im).size  # upright, as the fleet sees it
    counts = report["counts"]
    want = {"done": len(sizes), "failed": 0, "pending": 0, "total": len(sizes)}
    if {k: counts.get(k) for k in want} != want:
        fail(f"heatmap counts {counts}, expected {want}")
    names = sorted(j["name"] for j in report["jobs"])
    if names != sorted(sizes):
        fail(f"heatmap jobs {names}, expected {sorted(sizes)}")
    for job in report["jobs"]:
        name, (w, h) = job["name"], sizes[job["name"]]
        outs = job["outputs"]
        # heatmap.png: the colour map at the photo's size or square at the model's input side.
        hw, hh = image_size(dest / outs["heatmap"])
        if (hw, hh) != (w, h) and hw != hh:
            fail(f"{name} heatmap: {hw}×{hh}, neither the photo's {w}×{h} nor square")
        # The overlay: the photo's aspect ratio (to rounding), never larger than the photo.
        ow, oh = image_size(dest / outs["overlay"], ("PNG", "JPEG", "WEBP"))
        if ow > w or oh > h or abs(ow * h - oh * w) > max(w, h):
            fail(f"{name} overlay: {ow}×{oh} does not keep the photo's {w}×{h}")
        rec = json.loads((dest / outs["record"]).read_text())
        if not rec.get("top"):
            fail(f"{name}: record has no top classes")
    print(f"heatmap run {run}: {counts['done']}/{len(sizes)} photos done, heatmap and overlay "
          "decode with the right geometry")


def _get(url: str, auth: tuple[str, str] | None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_flower(url: str, user: str, password: str) -> None:
    url = url.rstrip("/")
    for path in ("/api/workers", "/"):
        code, _ = _get(url + path, None)
        if code != 401:
            fail(f"Flower {path} without credentials answered {code}, expected 401")
        code, _ = _get(url + path, (user, "wrong-" + password))
        if code != 401:
            fail(f"Flower {path} with a wrong password answered {code}, expected 401")
    deadline = time.monotonic() + 60
    while True:
        code, body = _get(url + "/api/workers?refresh=1", (user, password))
        workers = json.loads(body) if code == 200 else {}
        if code == 200 and workers:
            break
        if time.monotonic() > deadline:
            fail(f"Flower /api/workers with credentials: {code} {body[:200]!r}")
        time.sleep(2)
    code, _ = _get(url + "/", (user, password))
    if code != 200:
        fail(f"Flower dashboard with credentials answered {code}")
    print(f"flower: 401 without or with wrong credentials, 200 with them; workers {sorted(workers)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    g = sub.add_parser("grid")
    g.add_argument("dest", type=Path)
    g.add_argument("run")
    g.add_argument("--tile", type=int, required=True)
    g.add_argument("--filters", type=int, required=True)
    h = sub.add_parser("heatmaps")
    h.add_argument("dest", type=Path)
    h.add_argument("run")
    h.add_argument("--photos", type=Path, required=True)
    f = sub.add_parser("flower")
    f.add_argument("url")
    a = ap.parse_args()
    if a.what == "grid":
        check_grid(a.dest, a.run, a.tile, a.filters)
    elif a.what == "heatmaps":
        check_heatmaps(a.dest, a.run, a.photos)
    else:
        check_flower(a.url, os.environ["FLOWER_USER"], os.environ["FLOWER_PASSWORD"])


if __name__ == "__main__":
    main()
