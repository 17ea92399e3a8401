"""The Keras EfficientNet-Lite0 port must reproduce the PyTorch reference logits.

The fixture is produced by ``tools/make_effnet_reference.py`` with real
PyTorch; these tests need neither torch nor network access.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convatlas.shared.models import efficientnet_lite as eff
from convatlas.shared.models.torch_pickle import UnsafePickleError, load_torch_state_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ATOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "effnet_reference.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str, Path]:
    cache_dir = tmp_path_factory.mktemp("effnet_cache")
    model, sha = eff.load_efficientnet_lite0(cache_dir)
    return model, sha, cache_dir


def test_reference_inputs_are_intact(reference: dict[str, np.ndarray]) -> None:
    images = reference["images"]
    assert images.dtype == np.uint8 and images.shape[1:] == (224, 224, 3)
    assert len(images) >= 10
    assert len(reference["names"]) == len(images) == len(reference["logits"])
    for img, name, digest in zip(images, reference["names"], reference["sha256"], strict=True):
        assert hashlib.sha256(img.tobytes()).hexdigest() == str(digest), name


def test_source_weights_match_reference(converted: tuple[Any, str, Path]) -> None:
    _, sha, _ = converted
    meta = json.loads((FIXTURES / "effnet_reference.json").read_text())
    assert sha == meta["weights_sha256"]
    assert sha == hashlib.sha256(eff.weights_file().read_bytes()).hexdigest()


def test_logits_match_pytorch(
    converted: tuple[Any, str, Path], reference: dict[str, np.ndarray]
) -> None:
    model, _, _ = converted
    x = eff.preprocess_efficientnet_lite(reference["images"])
    assert x.dtype == np.float32
    logits = np.asarray(model(x, training=False))
    expected = reference["logits"]
    assert logits.shape == expected.shape == (len(x), 1000)
    diff = np.abs(logits - expected)
    worst = int(diff.max(axis=1).argmax())
    assert diff.max() <= ATOL, f"max |Δlogit| {diff.max():.3g} on {reference['names'][worst]}"
    for name, got, want in zip(
        reference["names"], logits.argmax(1), expected.argmax(1), strict=True
    ):
        assert got == want, f"top-1 differs for {name}: keras {got} vs torch {want}"


def test_model_layout(converted: tuple[Any, str, Path]) -> None:
    model, _, _ = converted
    assert eff.LAST_CONV_LAYER == "top_activation"
    assert tuple(model.get_layer(eff.LAST_CONV_LAYER).output.shape) == (None, 7, 7, 1280)
    for name in (
        "stem_conv",
        "stem_bn",
        "stem_relu",
        "block3b_expand_conv",
        "head_conv",
        "head_bn",
        "avg_pool",
        "predictions",
    ):
        model.get_layer(name)
    assert model.get_layer("predictions").get_config()["activation"] == "linear"
    assert not any(
        "expand" in layer.name for layer in model.layers if layer.name.startswith("block1a")
    )


def test_cached_weights_are_reused(
    converted: tuple[Any, str, Path],
    reference: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, sha, cache_dir = converted
    cached = eff.cached_weights_path(cache_dir, sha)
    assert cached.name == f"efficientnet-lite0-{sha[:16]}.weights.h5"
    assert sorted(p.name for p in cache_dir.iterdir()) == [cached.name]  # no temp leftovers
    mtime = cached.stat().st_mtime_ns

    def no_reconversion(*_: object, **__: object) -> None:
        raise AssertionError("the .pth was converted again despite a cached .weights.h5")

    monkeypatch.setattr(eff, "load_torch_state_dict", no_reconversion)
    again, sha2 = eff.load_efficientnet_lite0(cache_dir)
    assert sha2 == sha
    assert cached.stat().st_mtime_ns == mtime
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = eff.preprocess_efficientnet_lite(reference["images"][:1])
    np.testing.assert_allclose(
        np.asarray(again(x, training=False)), reference["logits"][:1], atol=ATOL, rtol=0
    )


# --- restricted unpickler -------------------------------------------------------------


class _Global:
    """Pickles as a bare GLOBAL opcode for ``module.name`` (no import needed)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:  # pragma: no cover - never called
        raise AssertionError

    def __reduce__(self) -> str:
        return self.name


class _Reduce:
    def __init__(self, func: _Global, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


class _Storage:
    def __init__(self, key: str, dtype: str, data: np.ndarray) -> None:
        self.key, self.dtype, self.data = key, dtype, data


class _TorchLikePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes torch-style pickles (globals, storage persistent ids) without torch."""

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", obj.dtype), obj.key, "cpu", obj.data.size)
        return None


def _dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _TorchLikePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _tensor(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> _Reduce:
    rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
    return _Reduce(
        rebuild,
        (storage, offset, size, stride, False, _Reduce(_Global("collections", "OrderedDict"), ())),
    )


def _state_dict(payload: dict[str, Any]) -> _Reduce:
    return _Reduce(_Global("collections", "OrderedDict"), (list(payload.items()),))


def _write_legacy(path: Path, obj: Any, storages: list[_Storage]) -> None:
    with path.open("wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        f.write(_dumps(obj))
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(
                struct.pack("<q", s.data.size)
                + s.data.astype(s.data.dtype.newbyteorder("<")).tobytes()
            )


def _write_zip(path: Path, obj: Any, storages: list[_Storage]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _dumps(obj))
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.data.tobytes())


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip], ids=["legacy", "zip"])
def test_synthetic_checkpoint_roundtrip(tmp_path: Path, writer: Any) -> None:
    base = np.arange(60, dtype=np.float32)
    floats = _Storage("0", "FloatStorage", base)
    longs = _Storage("1", "LongStorage", np.array([7, -3, 11], dtype=np.int64))
    payload = {
        "w": _tensor(floats, 0, (3, 4, 5), (20, 5, 1)),
        "w_t": _tensor(floats, 0, (5, 4, 3), (1, 5, 20)),  # transposed view, shared storage
        "slice": _tensor(floats, 21, (2, 3), (20, 2)),
        "idx": _tensor(longs, 1, (2,), (1,)),
    }
    path = tmp_path / "ckpt.pth"
    writer(path, _state_dict(payload), [floats, longs])
    sd = load_torch_state_dict(path)
    w = base.reshape(3, 4, 5)
    np.testing.assert_array_equal(sd["w"], w)
    np.testing.assert_array_equal(sd["w_t"], w.transpose(2, 1, 0))
    assert sd["w_t"].flags.c_contiguous
    np.testing.assert_array_equal(
        sd["slice"], base[21 + 20 * np.arange(2)[:, None] + 2 * np.arange(3)]
    )
    np.testing.assert_array_equal(sd["idx"], np.array([-3, 11]))
    assert sd["idx"].dtype == np.int64


def _evil(marker: Path) -> _Reduce:
    return _Reduce(_Global("os", "system"), (f"touch {marker}",))


def test_crafted_globals_resolve_with_plain_pickle() -> None:
    """Sanity check of the test helpers: their GLOBAL opcodes are real ones."""
    data = _dumps(_Reduce(_Global("os", "getcwd"), ()))
    assert isinstance(pickle.loads(data), str)


@pytest.mark.parametrize("where", ["first_pickle", "legacy_payload", "zip_payload", "nested"])
def test_restricted_unpickler_refuses_code_execution(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if where == "first_pickle":
        path.write_bytes(_dumps(_evil(marker)))
    elif where == "legacy_payload":
        _write_legacy(path, _state_dict({"x": _evil(marker)}), [])
    elif where == "zip_payload":
        _write_zip(path, _evil(marker), [])
    else:  # hidden as a tensor argument next to legitimate globals
        floats = _Storage("0", "FloatStorage", np.zeros(4, dtype=np.float32))
        payload = {
            "ok": _tensor(floats, 0, (4,), (1,)),
            "bad": _Reduce(
                _Global("torch._utils", "_rebuild_tensor_v2"), (_evil(marker), 0, (1,), (1,))
            ),
        }
        _write_legacy(path, _state_dict(payload), [floats])
    with pytest.raises(UnsafePickleError, match="os.system"):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    _write_zip(path, _Reduce(_Global("builtins", "eval"), ("1 + 1",)), [])
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_torch_state_dict(path)
