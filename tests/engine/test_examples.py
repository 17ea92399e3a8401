"""Dataset examples: receptive fields, top-k against brute force, the merge's algebra, crops,
jobs through storage (a bad photo fails alone, a re-run merges only new photos)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from convatlas.shared.engine.receptive_fields import layer_geometry, receptive_fields
from convatlas.shared.engine.unit_maxima import top_examples
from convatlas.shared.images.encode import encode_png
from convatlas.shared.patches import crop_region, patch
from convatlas.shared.topk import TopK
from convatlas.shared.unit_stats import UnitStats

# --- receptive fields ---------------------------------------------------------------------------


def _linear_model(side: int) -> keras.Model:
    """Every kind of window the geometry knows, all weights 1 and no activation, average
    pooling (same geometry as max pooling, but its gradient reaches the whole window)."""
    inp = keras.Input((side, side, 1), name="inp")
    x = keras.layers.Conv2D(1, 3, padding="same", use_bias=False, name="c1")(inp)
    x = keras.layers.AveragePooling2D(2, name="p1")(x)
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same", use_bias=False, name="c2")(x)
    y = keras.layers.Conv2D(1, 1, use_bias=False, name="skip")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.ZeroPadding2D(((1, 0), (2, 1)), name="zp")(x)
    x = keras.layers.Conv2D(1, 3, dilation_rate=2, padding="valid", use_bias=False, name="c3")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw")(x)
    model = keras.Model(inp, x)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
    return model


def _gradient_support(model: keras.Model, layer: str, y: int, x: int) -> tuple[int, int, int, int]:
    import tensorflow as tf

    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    side = model.inputs[0].shape[1]
    inp = tf.Variable(np.ones((1, side, side, 1), np.float32))
    with tf.GradientTape() as tape:
        out = sub(inp)[0, y, x, 0]
    grad = np.abs(tape.gradient(out, inp).numpy()[0, :, :, 0])
    rows, cols = np.nonzero(grad > 0)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


@pytest.mark.parametrize("side", [32, 33, 64])
def test_receptive_fields_equal_the_gradients_support(side: int) -> None:
    """The box is the field's bounding box. Where it reaches past the input, a dilated kernel's
    outer taps may land on padding only, so there the support may be smaller, never larger."""
    model = _linear_model(side)
    fields = receptive_fields(model, side)
    exact = 0
    for name in ("c1", "p1", "c2", "add", "c3", "dw"):
        g = fields[name]
        assert g.shape == tuple(model.get_layer(name).output.shape[1:3])
        h, w = g.shape
        for y, x in {(0, 0), (h - 1, w - 1), (h // 2, w // 2), (h // 2, w // 3), (0, w - 1)}:
            support = _gradient_support(model, name, y, x)
            t, left, b, r = g.box(y, x)
            inside = t >= 0 and left >= 0 and b <= side and r <= side
            if name in ("c1", "p1", "c2", "add") or inside:
                assert g.clipped_box(y, x) == support, (name, y, x)
                exact += inside
            else:
                ct, cl, cb, cr = g.clipped_box(y, x)
                st, sl, sb, sr = support
                assert ct <= st and cl <= sl and sb <= cb and sr <= cr, (name, y, x)
    assert side < 64 or exact >= 6  # every layer checked exactly somewhere inside


def test_vgg16_receptive_fields_are_the_known_ones() -> None:
    from convatlas.shared.models.registry import get_spec

    fields = receptive_fields(get_spec("vgg16-hed").build(), 224)
    want = {"block1_conv1": 3, "block1_conv2": 5, "block2_conv1": 10, "block2_conv2": 14,
            "block3_conv3": 40, "block4_conv3": 92, "block5_conv1": 132, "block5_conv3": 196}
    assert {n: fields[n].rf[0] for n in want} == want
    g = fields["block3_conv1"]
    assert (g.rows.jump, g.shape) == (4, (56, 56))
    assert g.box(0, 0) == (-10, -10, 14, 14)  # 24 px, centred on input pixel 1.5


# --- top-k against brute force --------------------------------------------------------------------


SIDE = 24


def _tiny_net() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="conv_b")(x)
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved tiny conv net, by the name the registry loads it by (``path#none``)."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    _tiny_net().save(path)
    return f"{path}#none"


def _photos(n: int, seed: int = 0, size: int = 30) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.integers(0, 256, (size, size + 6, 3), dtype=np.uint8)
        png = encode_png(img)
        out.append((hashlib.sha256(png).hexdigest(), img))
    return out


def test_top_k_equals_a_brute_force_reference(tiny_model: str) -> None:
    from convatlas.shared.images.decode import model_square
    from convatlas.shared.models.registry import get_model

    lm = get_model(tiny_model)
    photos = _photos(7)
    k = 3
    got = top_examples(lm, photos, ["conv_a", "conv_b"], k=k, side=SIDE, batch=3)
    for layer in ("conv_a", "conv_b"):
        sub = keras.Model(lm.model.inputs, lm.model.get_layer(layer).output)
        rows = []  # (unit, score, sha, y, x) for every photo, one photo per model call
        for sha, img in photos:
            fmap = np.asarray(sub(model_square(img, SIDE)[None].astype(np.float32)))[0]
            flat = fmap.reshape(-1, fmap.shape[-1])
            for u in range(flat.shape[1]):
                i = int(np.argmax(flat[:, u]))
                rows.append((u, float(flat[i, u]), sha, *divmod(i, fmap.shape[1])))
        for u in range(got[layer].units):
            ref = sorted((r for r in rows if r[0] == u), key=lambda r: (-r[1], r[2], r[3], r[4]))[:k]
            cands = got[layer].candidates(u)
            assert [(c.image_sha256, c.position) for c in cands] == [(r[2], (r[3], r[4])) for r in ref]
            np.testing.assert_allclose([c.score for c in cands], [r[1] for r in ref], rtol=1e-5)


def _first_max(fmap: np.ndarray, block: int) -> np.ndarray:
    """Reference: per channel, the flat index of the first maximum in block order."""
    h, w, c = fmap.shape
    out = np.zeros(c, np.int64)
    order = [(by * block + i, bx * block + j) for by in range(h // block) for bx in range(w // block)
             for i in range(block) for j in range(block)]
    for ch in range(c):
        top = fmap[..., ch].max()
        y, x = next((y, x) for y, x in order if fmap[y, x, ch] == top)
        out[ch] = y * w + x
    return out


@pytest.mark.parametrize("side", [16, 32, 64])  # blocks of 1, 2 and 4
def test_positions_are_the_first_arg_max(tmp_path: Path, side: int) -> None:
    """Ties everywhere (photos of 3 grey levels through an identity 1×1 convolution): the first
    maximum in block order; with distinct values, numpy's row-major argmax."""
    from convatlas.shared.engine.unit_maxima import argmax_block, channel_maxima
    from convatlas.shared.models.registry import get_model

    inp = keras.Input((None, None, 3))
    out = keras.layers.Conv2D(3, 1, use_bias=False, name="ident")(inp)
    model = keras.Model(inp, out)
    model.get_layer("ident").set_weights([np.eye(3, dtype=np.float32)[None, None]])
    model.save(tmp_path / "ident.keras")
    lm = get_model(f"{tmp_path / 'ident.keras'}#none")
    block = argmax_block(side, side)
    assert block == {16: 1, 32: 2, 64: 4}[side]
    rng = np.random.default_rng(4)
    x = (rng.integers(0, 3, (5, side, side, 3)) * 100).astype(np.uint8)
    x[0] = 0  # constant: (0, 0)
    scores, pos, hw = channel_maxima(lm, ["ident"], x)["ident"]
    assert hw == (side, side)
    np.testing.assert_array_equal(scores, x.reshape(5, -1, 3).max(axis=1))
    flat = pos[..., 0] * side + pos[..., 1]
    for i in range(5):
        np.testing.assert_array_equal(flat[i], _first_max(x[i].astype(np.float32), block))
    assert not flat[0].any()
    unique = rng.integers(0, 200, (2, side, side, 3)).astype(np.uint8)  # one 255 per channel
    where = rng.integers(0, side * side, (2, 3))
    for i in range(2):
        for ch in range(3):
            unique[i, where[i, ch] // side, where[i, ch] % side, ch] = 255
    _, pos2, _ = channel_maxima(lm, ["ident"], unique)["ident"]
    np.testing.assert_array_equal(pos2[..., 0] * side + pos2[..., 1], where)


# --- the merge ------------------------------------------------------------------------------------


def _partials(seed: int) -> list[TopK]:
    """Batches over 40 photos, scores with many exact ties (so order rules matter)."""
    rng = np.random.default_rng(seed)
    shas = [hashlib.sha256(bytes([i])).hexdigest() for i in range(40)]
    out = []
    for i in range(0, 40, 6):
        chunk = shas[i : i + 6]
        scores = rng.integers(0, 5, (len(chunk), 4)).astype(np.float32)  # ties
        pos = rng.integers(0, 7, (len(chunk), 4, 2))
        out.append(TopK.from_scores(chunk, scores, pos, 5))
    return out


def _merge_all(parts: list[TopK]) -> TopK:
    acc = parts[0]
    for p in parts[1:]:
        acc = acc.merge(p)
    return acc


def test_merge_is_associative_commutative_and_idempotent() -> None:
    parts = _partials(1)
    want = _merge_all(parts).key()
    rnd = random.Random(0)
    for _ in range(6):
        shuffled = parts + rnd.sample(parts, 3)  # shuffled, with repeats
        rnd.shuffle(shuffled)
        assert _merge_all(shuffled).key() == want
        # a tree of merges: pairs of pairs
        level = shuffled
        while len(level) > 1:
            level = [level[i].merge(level[i + 1]) if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
        assert level[0].key() == want
    whole = _merge_all(parts)
    assert whole.merge(whole).key() == want
    assert all(whole.merge(p).key() == want for p in parts)  # a redelivered batch: no change


def test_merge_equals_one_top_k_over_everything() -> None:
    rng = np.random.default_rng(5)
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(30)]
    scores = rng.normal(size=(30, 3)).astype(np.float32)
    pos = rng.integers(0, 9, (30, 3, 2))
    once = TopK.from_scores(shas, scores, pos, 4)
    parts = [TopK.from_scores(shas[i : i + 7], scores[i : i + 7], pos[i : i + 7], 4)
             for i in range(0, 30, 7)]
    assert _merge_all(parts[::-1]).key() == once.key()
    assert len(once.shas) <= 4 * 3  # only referenced photos are kept: O(k × channels)
    for u in range(3):
        best = np.argsort(-scores[:, u], kind="stable")[:4]
        assert [c.image_sha256 for c in once.candidates(u)] == [shas[i] for i in best]
    assert TopK.from_json(json.loads(json.dumps(once.to_json()))).key() == once.key()


def test_a_photo_counts_once_per_unit_and_stats_add_up() -> None:
    sha = "ab" * 32
    a = TopK.from_scores([sha], np.array([[2.0]]), np.array([[[1, 1]]]), 3)
    b = TopK.from_scores([sha], np.array([[3.0]]), np.array([[[0, 2]]]), 3)
    assert a.merge(b).key() == [[(sha, 0, 2, 3.0)]] == b.merge(a).key()
    s = UnitStats.from_scores(np.array([[1.0, 0.0], [3.0, 0.0]]))
    t = s.add(UnitStats.from_json(json.loads(json.dumps(s.to_json()))))
    assert t.unit(0) == {"photos": 4, "mean": 2.0, "std": 1.0, "peak": 3.0, "fired": 1.0}
    assert t.unit(1)["fired"] == 0.0


# --- crops ----------------------------------------------------------------------------------------


def _coordinate_photo(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy % 256, xx % 256, (yy // 256) * 16 + xx // 256], -1).astype(np.uint8)


@pytest.mark.parametrize("layer", ["block1_conv2", "block3_conv1", "block5_conv3"])
@pytest.mark.parametrize("scale", [(1, 1), (2, 3)])
def test_crops_are_the_receptive_field_on_the_photo(layer: str, scale: tuple[int, int]) -> None:
    from convatlas.shared.models.registry import get_spec

    g = layer_geometry(get_spec("vgg16-hed").build(), layer, 224)
    h, w = 224 * scale[0], 224 * scale[1]
    photo = _coordinate_photo(h, w)
    ry, rx = g.rf
    for y, x in [(0, 0), (g.shape[0] // 2, g.shape[1] - 1), (g.shape[0] - 1, 1)]:
        t, left, b, r = g.box(y, x)
        region = crop_region(photo, (t, left, b, r), (224, 224))
        assert region.shape[:2] == (ry * scale[0], rx * scale[1])
        inside = region[: , :].astype(int)
        for i in range(0, region.shape[0], max(1, region.shape[0] // 5)):
            for j in range(0, region.shape[1], max(1, region.shape[1] // 5)):
                py, px = t * scale[0] + i, left * scale[1] + j
                if 0 <= py < h and 0 <= px < w:  # the photo's own pixel
                    assert list(inside[i, j]) == list(photo[py, px])
                else:  # beyond the photo: black
                    assert not inside[i, j].any()
        got = patch(photo, (t, left, b, r), (224, 224), 32)
        # the same picture as resizing the black-padded region (what it avoids building)
        want = cv2.resize(region, (32, 32), interpolation=cv2.INTER_AREA)
        assert got.shape == (32, 32, 3)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 4.0, (layer, scale, y, x)


# --- jobs through storage: a bad photo fails alone, a re-run merges only new photos ------------


def _folder(path: Path, photos: list[tuple[str, np.ndarray]]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for i, (_, img) in enumerate(photos):
        (path / f"p{i:02d}.png").write_bytes(encode_png(img))


def test_examples_jobs_bad_photo_alone_rerun_merges_only_new(tiny_model: str, tmp_path: Path) -> None:
    from convatlas.producer.plans.examples import plan_examples
    from convatlas.producer.run_examples import run_examples_local
    from convatlas.shared.config import Settings
    from convatlas.shared.images.decode import decode_image
    from convatlas.shared.models.registry import get_model
    from convatlas.shared.storage import LocalStorage

    photos = _photos(6, seed=9)
    folder, out = tmp_path / "photos", tmp_path / "out"
    _folder(folder, photos[:4])
    (folder / "broken.jpg").write_text("<html>not a photo</html>")
    store = LocalStorage(out)
    settings = Settings.from_env()

    def run() -> tuple[object, dict]:
        plan = plan_examples([str(folder)], tiny_model, "conv_a,conv_b", 3, settings, store,
                             batch=2, side=SIDE)
        return plan, run_examples_local(plan, out, progress=False)

    plan, report = run()
    assert len(plan.jobs) == 3  # 5 photos in batches of 2
    assert [f["name"] for f in report["failed_photos"]] == ["broken.jpg"]
    assert report["counts"]["failed"] == 0  # the batch with the bad photo still succeeded
    lm = get_model(tiny_model)
    reduces = {r.layer: r for r in plan.reduces}

    def state_key(layer: str) -> list:
        return TopK.from_json(json.loads(store.get_bytes(reduces[layer].marker))["topk"]).key()

    def reference(n: int) -> dict[str, list]:
        return {k: v.key() for k, v in top_examples(lm, photos[:n], ["conv_a", "conv_b"], 3,
                                                    SIDE, 64).items()}

    want = reference(4)
    assert {layer: state_key(layer) for layer in reduces} == want
    r = reduces["conv_b"]
    mosaic = decode_image(store.get_bytes(r.unit_key(0)))
    assert mosaic.shape == (197, 197, 3)  # k = 3: 2×2 tiles of 96 px, 5 px margins
    assert mosaic[:96, :96].any() and not mosaic[101:, 101:].any()  # the 4th tile stays black
    assert decode_image(store.get_bytes(r.page_key(0))).shape == (547, 547, 3)
    record = json.loads(store.get_bytes(r.unit_key(0, ".json")))
    assert [e["image_sha256"] for e in record["examples"]] == [c[0] for c in want["conv_b"][0]]
    assert record["examples"][0]["name"].startswith("p") and record["stats"]["photos"] == 4

    # the same folder again: nothing to map, nothing redrawn
    plan2, report2 = run()
    assert plan2.jobs == [] and all(row["status"] == "skipped" for row in report2["examples"])
    # two new photos: only they are mapped, and merged into the existing top-k
    _folder(folder, photos)  # rewrites p00..p03 identically, adds p04, p05
    plan3, report3 = run()
    assert sorted(s for j in plan3.jobs for s in j.images) == sorted(s for s, _ in photos[4:])
    assert {layer: state_key(layer) for layer in reduces} == reference(6)
    assert json.loads(store.get_bytes(r.unit_key(0, ".json")))["stats"]["photos"] == 6
    # a redelivered map changes nothing
    (job,) = [j for j in plan3.jobs]
    store.delete(job.marker)
    from convatlas.shared.jobs import run_jobs
    from convatlas.shared.jobs.examples_reduce import reduce_examples

    run_jobs([job], store)
    assert reduce_examples(r, store).status == "skipped"
    assert state_key("conv_b") == reference(6)["conv_b"]


@pytest.mark.parametrize(("args", "message"), [
    (["--layers", "block9_conv1"], "valid layers are block1_conv1"),
    (["--model", "resnet9000"], "choose from"),
    (["--top", "0"], "--top must be"),
])
def test_bad_examples_requests_are_refused_before_any_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "convatlas.producer.cli", "examples",
                        "samples/photos", *args, "--out", str(out)], capture_output=True,
                       text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and not out.exists()
