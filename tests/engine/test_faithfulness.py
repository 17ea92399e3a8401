"""Faithfulness metrics on a synthetic classifier whose answer is known: its class-0 logit is the
mean of the (preprocessed) image over a fixed region, so deleting that region must drop the score
first, and every curve can be computed by hand. ROAD's imputation is checked against the exact
sparse solve of its linear system."""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from convatlas.shared.engine.faithfulness import (
    METRICS,
    Protocol,
    check_metrics,
    faithfulness,
    linear_impute,
    passes_per_photo,
    summarise,
)
from convatlas.shared.models.registry import LoadedModel, get_model

SIZE = 32
REGION = (slice(8, 16), slice(8, 24))  # rows, cols: 8×16 pixels = two 4-px heatmap cells high


def region_mask() -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.float32)
    m[REGION] = 1.0
    return m


@pytest.fixture(scope="module")
def region_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """logits = (s, −s), s = mean over REGION of the first channel of the preprocessed input."""
    inputs = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(1, SIZE, use_bias=False, name="region_mean")
    flat = keras.layers.Flatten()(conv(inputs))
    dense = keras.layers.Dense(2, use_bias=False, name="logits")
    model = keras.Model(inputs, dense(flat))
    kernel = np.zeros((SIZE, SIZE, 3, 1), np.float32)
    kernel[..., 0, 0] = region_mask() / region_mask().sum()
    conv.set_weights([kernel])
    dense.set_weights([np.array([[1.0, -1.0]], np.float32)])
    path = Path(tmp_path_factory.mktemp("region")) / "region.keras"
    model.save(path)
    return get_model(f"{path}#tf")  # x / 127.5 − 1: "mean" baseline = grey 127.5


def prob(s: float) -> float:
    return float(1.0 / (1.0 + np.exp(-2.0 * s)))  # softmax((s, −s))[0]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)  # dark background
    img[REGION] = rng.integers(200, 256, (8, 16, 3))  # bright region: s ≈ 0.8
    return img


def good_map() -> np.ndarray:
    h = np.full((8, 8), 0.05, np.float32)
    h[2:4, 2:6] = 1.0  # the region at 4-px cells
    return h


def test_deletion_and_insertion_follow_the_known_answer(region_model, photo) -> None:  # noqa: ANN001
    good, bad = good_map(), 1.05 - good_map()
    proto = Protocol(steps=8, deletion_baseline="mean", insertion_baseline="mean")
    r_good, r_bad = faithfulness(region_model, [photo, photo], [good, bad], [0, 0],
                                 ("deletion", "insertion"), protocol=proto, pass_batch=5)
    x = photo.astype(np.float64) / 127.5 - 1
    s_full = x[REGION][..., 0].mean()
    assert r_good["probability"] == pytest.approx(prob(s_full), abs=1e-5)
    # by hand: ranks from the bilinearly resized map, raster order for ties
    for res, heat in ((r_good, good), (r_bad, bad)):
        sal = cv2.resize(heat, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).clip(0, 1)
        order = np.argsort(-sal.ravel(), kind="stable")
        dele, ins = [], []
        for t in range(9):
            k = round(t * SIZE * SIZE / 8)
            shown = np.zeros(SIZE * SIZE, bool)
            shown[order[:k]] = True
            shown = shown.reshape(SIZE, SIZE)
            dele.append(prob((x[..., 0] * ~shown)[REGION].mean()))
            ins.append(prob((x[..., 0] * shown)[REGION].mean()))
        np.testing.assert_allclose(res["deletion_curve"], dele, atol=1e-5)
        np.testing.assert_allclose(res["insertion_curve"], ins, atol=1e-5)
        assert res["deletion_auc"] == pytest.approx(np.trapezoid(dele, dx=1 / 8), abs=1e-6)
    # the region goes first with the good map: the score drops at once, and not with the bad one
    assert r_good["deletion_curve"][1] < r_good["deletion_curve"][0] - 0.05
    assert r_bad["deletion_curve"][1] == pytest.approx(r_bad["deletion_curve"][0], abs=1e-6)
    assert r_good["deletion_auc"] < r_bad["deletion_auc"] - 0.1
    assert r_good["insertion_auc"] > r_bad["insertion_auc"] + 0.1


def test_blur_baseline_is_the_documented_gaussian(region_model, photo) -> None:  # noqa: ANN001
    proto = Protocol(steps=4, insertion_baseline="blur")
    (res,) = faithfulness(region_model, [photo], [good_map()], [0], ("insertion",), protocol=proto)
    blurred = cv2.GaussianBlur(photo.astype(np.float32), (11, 11), 5.0) / 127.5 - 1
    assert res["insertion_curve"][0] == pytest.approx(prob(blurred[REGION][..., 0].mean()), abs=1e-5)
    assert res["insertion_curve"][-1] == pytest.approx(res["probability"], abs=1e-6)


def test_avgdrop_by_hand(region_model, photo) -> None:  # noqa: ANN001
    good, bad = good_map(), 1.05 - good_map()
    r_good, r_bad = faithfulness(region_model, [photo, photo], [good, bad], [0, 0], ("avgdrop",))
    x = photo.astype(np.float64) / 127.5 - 1
    p = prob(x[REGION][..., 0].mean())
    for res, heat in ((r_good, good), (r_bad, bad)):
        up = cv2.resize(heat, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).clip(0, 1)
        pm = prob((x[..., 0] * up)[REGION].mean())
        assert res["masked_probability"] == pytest.approx(pm, abs=1e-5)
        assert res["avg_drop"] == pytest.approx(max(0.0, p - pm) / p, abs=1e-5)
        assert res["conf_increase"] == (pm > p)
    assert r_good["avg_drop"] < r_bad["avg_drop"]
    summary = summarise([r_good, r_bad])
    assert summary["avg_drop"]["mean"] == pytest.approx((r_good["avg_drop"] + r_bad["avg_drop"]) / 2)
    assert summary["avg_drop"]["n"] == 2


def test_road_prefers_the_right_map(region_model, photo) -> None:  # noqa: ANN001
    good, bad = good_map(), 1.05 - good_map()
    r_good, r_bad = faithfulness(region_model, [photo, photo], [good, bad], [0, 0], ("road",),
                                 pass_batch=7)
    assert len(r_good["road_morf"]) == len(r_good["road_lerf"]) == 9
    # removing the most relevant 10 % (MoRF at the 90th percentile) already hurts with the good map
    assert r_good["road_morf"][-1] < -0.02
    assert r_good["road"] > 0.05 > -0.05 > r_bad["road"]
    # batching does not change a photo's figure (noise fixed per percentile, not per batch slot)
    (alone,) = faithfulness(region_model, [photo], [good], [0], ("road",), pass_batch=18)
    np.testing.assert_allclose(alone["road_morf"], r_good["road_morf"], atol=1e-6)


def road_exact(img: np.ndarray, remove: np.ndarray) -> np.ndarray:
    """ROAD's system (tleemann/road_evaluation imputations.py) solved exactly with scipy."""
    import scipy.sparse as sparse
    import scipy.sparse.linalg as linalg

    h, w, c = img.shape
    idx = np.flatnonzero(remove.ravel())
    var = np.full(h * w, -1)
    var[idx] = np.arange(len(idx))
    a = sparse.lil_matrix((len(idx), len(idx)))
    b = np.zeros((len(idx), c))
    flat = img.reshape(-1, c).astype(np.float64)
    diag = np.zeros(len(idx))
    rows, cols = np.divmod(idx, w)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == dc == 0:
                continue
            wt = 1 / 12 if dr and dc else 1 / 6
            rr, cc = rows + dr, cols + dc
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            diag[ok] += wt
            nb = rr[ok] * w + cc[ok]
            eq = np.flatnonzero(ok)
            unknown = var[nb] >= 0
            a[eq[unknown], var[nb[unknown]]] = -wt
            b[eq[~unknown]] += wt * flat[nb[~unknown]]
    a.setdiag(diag)
    out = flat.copy()
    out[idx] = linalg.spsolve(sparse.csc_matrix(a), b)
    return out.reshape(h, w, c)


@pytest.mark.parametrize("percentile", [10, 50, 90])
def test_linear_imputation_matches_the_exact_solve(percentile: int) -> None:
    rng = np.random.default_rng(percentile)
    img = cv2.GaussianBlur(rng.random((96, 96, 3)).astype(np.float32), (0, 0), 3) * 4 - 2
    heat = cv2.resize(rng.random((6, 6)).astype(np.float32), (96, 96))
    remove = (heat >= np.percentile(heat, percentile)).astype(np.float32)
    got = keras.ops.convert_to_numpy(linear_impute(img[None], remove[None, :, :, None]))[0]
    exact = road_exact(img, remove > 0)
    err = np.abs(got - exact)
    assert err.max() < 2e-3 * (img.max() - img.min()), err.max()
    np.testing.assert_array_equal(got[remove == 0], img[remove == 0])


def test_names_and_costs() -> None:
    assert check_metrics("deletion, road,deletion") == ("deletion", "road")
    assert check_metrics("") == ()
    with pytest.raises(ValueError, match="'rod'.*deletion, insertion, road, avgdrop"):
        check_metrics("rod")
    assert passes_per_photo(METRICS) == 1 + 20 + 20 + 18 + 1
    with pytest.raises(ValueError, match="baseline"):
        Protocol(deletion_baseline="black")
