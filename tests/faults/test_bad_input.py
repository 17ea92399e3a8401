"""Bad input through the fleet: every awkward file a real folder holds gets a clear per-item
outcome, the rest completes, the worker stays up, and nothing escapes the storage prefix.
Invalid requests are refused before anything reaches Redis or S3."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convatlas.producer.plans.heatmaps import plan_heatmaps
from convatlas.shared.images.decode import decode_image
from convatlas.shared.report import gallery_key, report_key
from tests.faults.conftest import check_report
from tests.unit.test_images import bomb_png, encode, photo

MODEL = "efficientnet-lite0"
# name → substring of its per-item error
FAILS = {
    "empty.jpg": "empty file",
    "truncated.jpg": "truncated or corrupt JPEG",
    "notes.jpg": "looks like text",
    "page.png": "looks like HTML",
    "bomb-40000x40000.png": "too large",
    "tiny-1x1.png": "too small",
    "strip-10000x3.png": "too small",
}
GOOD = ["cmyk.jpg", "deep-16bit.png", "gray.png", "rgba.png", "anim.gif", "exif-rotated.jpg",
        "name with spaces.png", "ünïcödé 猫.png", "..png", "..%2f..%2fescape.png", "-rf.png",
        "sub/..png"]


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    return encode(Image.fromarray(arr, mode) if mode else Image.fromarray(arr), "PNG")


def bad_folder(root: Path) -> Path:
    """One of each awkward case; every good image has distinct pixels (distinct jobs)."""
    d = root / "inbox"
    (d / "sub").mkdir(parents=True)
    w = lambda name, data: (d / name).write_bytes(data)  # noqa: E731
    full_jpeg = encode(Image.fromarray(photo(48, 64, 1)), "JPEG", quality=90)
    w("empty.jpg", b"")
    w("truncated.jpg", full_jpeg[: len(full_jpeg) // 2])
    w("notes.jpg", b"Shopping list:\n- milk\n- eggs\n" * 20)
    w("page.png", b"<!DOCTYPE html><html><head><title>404</title></head><body></body></html>\n")
    w("bomb-40000x40000.png", bomb_png(40_000, 40_000))
    w("tiny-1x1.png", _png(np.zeros((1, 1, 3), np.uint8)))
    w("strip-10000x3.png", _png(np.full((3, 10_000, 3), 90, np.uint8)))
    w("cmyk.jpg", encode(Image.fromarray(photo(48, 64, 2)).convert("CMYK"), "JPEG"))
    deep = (photo(48, 64, 3)[..., 0].astype(np.uint16) * 257)
    w("deep-16bit.png", encode(Image.fromarray(deep).convert("I;16"), "PNG"))
    w("gray.png", _png(photo(48, 64, 4)[..., 1]))
    rgba = np.dstack([photo(48, 64, 5), np.full((48, 64), 128, np.uint8)])
    w("rgba.png", _png(rgba, "RGBA"))
    frames = [Image.fromarray(photo(48, 64, s)).convert("P") for s in (6, 7, 8)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    w("anim.gif", buf.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 wide × 40 high; upright is 40 wide × 64 high
    w("exif-rotated.jpg", encode(Image.fromarray(photo(40, 64, 9)), "JPEG", exif=exif.tobytes()))
    for i, name in enumerate(GOOD[6:], start=10):
        w(name, _png(photo(40 + i, 56, i)))
    shutil.copy(d / "gray.png", d / "gray copy.png")  # same photo twice: computed once
    outside = root / "secret.png"
    outside.write_bytes(_png(photo(32, 32, 99)))
    os.symlink(outside, d / "outside-link.png")
    return d


def test_bad_files_fail_alone_and_the_rest_completes(make_rig, tmp_path: Path) -> None:  # noqa: ANN001
    rig = make_rig(visibility_timeout=120, concurrency=16)
    folder = bad_folder(tmp_path)
    keys_before = rig.bucket_keys()
    wait = rig.run_deadline(len(GOOD) + len(FAILS))  # at most one job per batch
    r = rig.cli("submit", "heatmaps", str(folder), "--model", MODEL, "--wait", "--timeout",
                f"{wait:.0f}", timeout=wait + rig.batch_bound())  # + the CLI's own start
    assert r.returncode == 1, r.stdout + r.stderr  # some files failed: exit 1, not a crash
    assert "outside-link.png: refused: symlink points outside" in r.stderr
    run_id = re.search(r"run (\S+):", r.stdout).group(1)
    report = json.loads(rig.storage.get_bytes(report_key(run_id)))
    plan = plan_heatmaps([str(folder)], MODEL, None, None, rig.settings)
    assert plan.run_id == run_id

    check_report(rig.storage, plan, report, failed=set(FAILS))
    items = {j["name"]: j for j in report["jobs"]}
    for name, why in FAILS.items():
        assert why in items[name]["error"], (name, items[name]["error"])
        assert f"FAILED {name}: " in r.stdout
    good = sorted(n for n, j in items.items() if j["status"] == "done")
    assert good == sorted(GOOD[:2] + ["gray copy.png"] + GOOD[3:])
    c = report["counts"]
    assert (c["done"], c["failed"], c["pending"]) == (len(GOOD), len(FAILS), 0)
    assert [x["name"] for x in report["rejected"]] == ["outside-link.png"]
    assert report["duplicates"] and sorted(*report["duplicates"].values()) == [
        "gray copy.png", "gray.png"]

    # the EXIF-rotated photo comes out upright: 64 high, 40 wide
    rot = plan.jobs[[j.name for j in plan.jobs].index("exif-rotated.jpg")].outputs()
    assert decode_image(rig.storage.get_bytes(rot["overlay"])).shape == (64, 40, 3)

    # every object the run created is under results/, inputs/ or runs/<id>/ of its prefix;
    # the same photo twice was uploaded and computed once
    new = rig.bucket_keys() - keys_before
    pre = re.escape(rig.settings.s3_prefix)
    ok = re.compile(rf"^{pre}/(results/|inputs/|runs/{re.escape(run_id)}/)[^/]")
    assert new and all(ok.match(k) for k in new), sorted(k for k in new if not ok.match(k))
    assert sum(k.endswith("/record.json") for k in new) == len(GOOD)
    assert sum(k.endswith("/error.json") for k in new) == len(FAILS)
    assert sum("/inputs/" in k for k in new) == len(GOOD) + len(FAILS)
    assert "secret" not in rig.storage.get_bytes(gallery_key(run_id)).decode()
    assert rig.ping_worker()  # the worker survived all of it


REFUSED = [
    (["grids", "--model", "no-such-model"], "efficientnet-lite0"),
    (["grids", "--model", "vgg16-hed", "--layers", "no_such_layer"], "block1_conv1"),
    (["grids", "--model", "vgg16-hed", "--filters", "0:999"], "0..63"),
    (["heatmaps", "{photos}", "--class", "5000"], "0..999"),
    (["heatmaps", "{photos}", "--class", "no-such-class-xyz"], "0..999"),
    (["heatmaps", "{photos}", "--model", MODEL, "--layer", "nolayer"], "stem_conv"),
]


@pytest.mark.parametrize(("args", "choices"), REFUSED, ids=lambda v: str(v)[:40])
def test_invalid_request_is_refused_before_queueing(
    make_rig, tmp_path: Path, args: list[str], choices: str  # noqa: ANN001
) -> None:
    """Exit code 2 with the valid choices; no Redis key and no S3 object is created."""
    rig = make_rig(worker=False)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.png").write_bytes(_png(photo(48, 64)))
    r = rig.cli("submit", *[a.replace("{photos}", str(tmp_path / "p")) for a in args])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "error:" in r.stderr and choices in r.stderr, r.stderr
    assert rig.redis_client().dbsize() == 0
    assert rig.storage.list_keys("runs/") == [] and rig.storage.list_keys("inputs/") == []
