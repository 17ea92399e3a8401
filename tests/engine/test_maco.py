"""The maco style on a tiny network: the phase-only parametrisation keeps the prescribed magnitude
exactly, the ascent raises the objective, the alpha map has the image's shape; the spectrum is
shipped, computed from a folder and named by its hash in the result key; ``grids --style maco``
runs in this process and writes the alpha outputs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from convatlas.shared.engine.optimisers import Nadam
from convatlas.shared.engine.param import spectra
from convatlas.shared.engine.param.maco import PhaseImage
from convatlas.shared.engine.patterns import PatternParams, filter_patterns
from convatlas.shared.engine.styles import get_style
from convatlas.shared.engine.transforms import (
    MACO_BOX_RANGE,
    MacoCrop,
    apply_transforms,
    draw_uniforms,
    maco_transforms,
)
from convatlas.shared.images.encode import encode_png
from convatlas.shared.models.registry import LoadedModel, get_model

SIDE = 24


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, LoadedModel]:
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("maco") / "tiny.keras"
    inp = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv_a")(inp)
    x = keras.layers.Conv2D(5, 3, activation="relu", padding="same", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(3, name="logits")(x)).save(path)
    model = f"{path}#none"
    return model, get_model(model)


@pytest.mark.parametrize("size", [16, 17])
def test_phase_only_keeps_the_prescribed_magnitude_exactly(size: int) -> None:
    mag = spectra.magnitude("", size)
    p = PhaseImage(size, mag)
    v = np.stack([p.init(f, 0) for f in range(3)])
    spec = p.spectrum_numpy(v)
    np.testing.assert_allclose(np.abs(spec), np.broadcast_to(p.magnitude, spec.shape), rtol=1e-6)
    # the spectrum is a real image's: the inverse transform drops nothing
    signal = np.fft.irfft2(spec, s=(size, size))
    np.testing.assert_allclose(np.abs(np.fft.rfft2(signal)), np.abs(spec), rtol=1e-4, atol=1e-3 * mag.max())
    np.testing.assert_allclose(p.magnitude, mag, rtol=1e-6)  # the shipped spectrum is already symmetric
    # the compiled mapping (keras.ops) is the NumPy reference
    got = ops.convert_to_numpy(p.to_pixels(ops.convert_to_tensor(v)))
    np.testing.assert_allclose(got, p.to_pixels_numpy(v), atol=2e-2)
    assert got.shape == (3, size, size, 3) and got.min() > 0 and got.max() < 255


def test_magnitude_survives_optimisation_steps() -> None:
    """Only the phase moves: after NAdam steps on any gradient the magnitude is unchanged."""
    size = 16
    p = PhaseImage(size, spectra.magnitude("", size))
    v = ops.convert_to_tensor(np.stack([p.init(0, 0)]))
    state = Nadam().init(v)
    rng = np.random.default_rng(0)
    for t in range(3):
        v, state = Nadam().update(v, ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32")),
                                  state, t, 1.0)
    np.testing.assert_allclose(np.abs(p.spectrum_numpy(ops.convert_to_numpy(v))),
                               np.broadcast_to(p.magnitude, (1, *p.shape)), rtol=1e-6)


def test_spectrum_from_a_folder_is_named_by_its_hash(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    for i in range(3):
        (tmp_path / f"p{i}.png").write_bytes(encode_png(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)))
    sha = spectra.resolve_spectrum_from(str(tmp_path))
    assert spectra.is_spectrum_id(sha) and sha != spectra.shipped_id()
    assert spectra.spectrum_path(sha).is_file()
    assert spectra.magnitude(sha, 20).shape == (3, 20, 11)
    shipped = PatternParams(style="maco")
    own = PatternParams(style="maco", spectrum_from=sha)
    assert shipped.slug().endswith(f"-maco-sp{spectra.shipped_id()[:12]}")
    assert own.slug().endswith(f"-maco-sp{sha[:12]}") and own.slug() != shipped.slug()
    with pytest.raises(ValueError, match="maco"):
        PatternParams(style="lucid", spectrum_from=sha)
    with pytest.raises(ValueError, match="folder"):
        spectra.resolve_spectrum_from(str(tmp_path / "missing"))


def test_maco_paper_values_and_crops() -> None:
    style = get_style("maco")
    assert (style.default_steps, style.default_step_size, style.alpha) == (256, 1.0, True)
    p = PatternParams(style="maco")
    assert (p.steps, p.step_size) == (256, 1.0)
    u = draw_uniforms(maco_transforms(16), 0, 200, 0)
    assert u.shape == (200, 4)
    side = u[:, 2]
    assert MACO_BOX_RANGE[0] <= side.min() and side.max() <= MACO_BOX_RANGE[1]
    assert side[:20].mean() > side[-20:].mean()  # the crops shrink over the run
    x = ops.convert_to_tensor(np.full((2, 16, 16, 3), 100.0, np.float32))
    out = ops.convert_to_numpy(apply_transforms(maco_transforms(16), x, ops.convert_to_tensor(u[:2])))
    assert out.shape == (2, 16, 16, 3) and 3 < out.std() < 30  # noise of σ ≈ 10 on 0–255
    full = MacoCrop().matrix(ops.convert_to_tensor(np.array([[0.5, 0.5, 1.0]], np.float32)), 16)
    np.testing.assert_allclose(ops.convert_to_numpy(full)[0], np.eye(3), atol=1e-6)  # whole tile


def test_maco_ascent_raises_the_objective_and_gives_alpha(tiny: tuple[str, LoadedModel]) -> None:
    _, lm = tiny
    params = PatternParams(size=SIDE, steps=24, style="maco")
    got = filter_patterns(lm, "conv_b", [0, 1, 2], params)
    for p in got:
        assert p.final_activation > p.start_activation, p
        assert p.alpha is not None and p.alpha.shape == (SIDE, SIDE) and p.alpha.dtype == np.float32
        assert p.alpha.min() >= 0 and p.alpha.max() > 0
        assert p.image.shape == (SIDE, SIDE, 3) and p.image.dtype == np.uint8
    again = filter_patterns(lm, "conv_b", [1], params)[0]
    np.testing.assert_allclose(again.raw, got[1].raw, atol=1e-3)  # reproducible, batch-independent


def test_grids_style_maco_runs_locally(tiny: tuple[str, object], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from convatlas.producer.cli import app

    model, _ = tiny
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(5)
    for i in range(2):
        (photos / f"p{i}.png").write_bytes(encode_png(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "grids", "--model", model, "--layers", "conv_a", "--filters", "0:2", "--size", "16",
        "--steps", "4", "--style", "maco", "--spectrum-from", str(photos), "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    sha = spectra.resolve_spectrum_from(str(photos))
    folder = next(out.glob(f"results/*/*/patterns/v1/conv_a/*-maco-sp{sha[:12]}"))
    for name in ("f0000.png", "f0000.alpha.npy", "f0000.alpha.png", "f0000.rgba.png", "f0001.json"):
        assert (folder / name).is_file(), name
    assert np.load(folder / "f0000.alpha.npy").shape == (16, 16)
    assert (out / "inputs" / sha[:2] / sha).is_file()  # the spectrum travels as a run input


def test_a_worker_fetches_a_users_spectrum_from_the_run_inputs(tmp_path: Path) -> None:
    """On the fleet the spectrum is not on the worker's disk: the job's prepare step reads it
    from ``inputs/<sha256>`` (uploaded with the plan) and keeps it for the ascent."""
    from convatlas.shared.jobs.patterns import FilterJob, _prepare
    from convatlas.shared.keys import input_key
    from convatlas.shared.storage import LocalStorage

    data = spectra.spectrum_bytes(np.random.default_rng(6).random((3, 8, 5)).astype(np.float32) + 1)
    sha = __import__("hashlib").sha256(data).hexdigest()
    storage = LocalStorage(tmp_path)
    storage.put_bytes(input_key(sha), data, "application/octet-stream")
    job = FilterJob("m", "0" * 64, "conv_a", 0, PatternParams(style="maco", spectrum_from=sha))
    assert not spectra.spectrum_path(sha).exists()
    assert _prepare(job, storage) is None
    assert spectra.spectrum_path(sha).is_file() and spectra.magnitude(sha, 12).shape == (3, 12, 7)
    assert set(job.outputs()) == {"png", "npy", "alpha_npy", "alpha_png", "rgba_png", "record"}
    spectra.spectrum_path(sha).unlink()
