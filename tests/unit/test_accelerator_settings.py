"""Settings for accelerator hosts: a local-directory fleet storage (``CONVATLAS_STORAGE_DIR``)
and JAX's runtime settings (``CONVATLAS_JAX_MEM_FRACTION``, ``CONVATLAS_COMPILE_CACHE``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from convatlas.shared.config import Settings
from convatlas.shared.engine.backend import jax_runtime
from convatlas.shared.storage import LocalStorage, S3Storage, storage_from_settings

pytestmark = pytest.mark.unit

JAX_VARS = ("XLA_PYTHON_CLIENT_MEM_FRACTION", "JAX_COMPILATION_CACHE_DIR",
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", jax_runtime.MEM_FRACTION_ENV,
            jax_runtime.COMPILE_CACHE_ENV)


def test_storage_dir_gives_local_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVATLAS_STORAGE_DIR", str(tmp_path))
    storage = storage_from_settings(Settings.from_env())
    assert isinstance(storage, LocalStorage) and storage.root == tmp_path.resolve()
    storage.put_bytes("a/b.txt", b"x")
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"x"


def test_without_storage_dir_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVATLAS_STORAGE_DIR", raising=False)
    assert isinstance(storage_from_settings(Settings.from_env()), S3Storage)


@pytest.fixture
def clean_jax_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in JAX_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_jax_runtime_env(tmp_path: Path, clean_jax_env: pytest.MonkeyPatch) -> None:
    import os

    clean_jax_env.setenv(jax_runtime.MEM_FRACTION_ENV, "0.9")
    clean_jax_env.setenv(jax_runtime.COMPILE_CACHE_ENV, str(tmp_path / "cache"))
    done = jax_runtime.apply_env()
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9"
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir() and set(done) >= {"XLA_PYTHON_CLIENT_MEM_FRACTION"}
    assert "0.9" in jax_runtime.describe()


def test_jax_runtime_user_variable_wins(clean_jax_env: pytest.MonkeyPatch) -> None:
    import os

    clean_jax_env.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    clean_jax_env.setenv(jax_runtime.MEM_FRACTION_ENV, "0.9")
    assert jax_runtime.apply_env() == {}
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.5"


@pytest.mark.parametrize("bad", ["0", "1.5", "half"])
def test_jax_runtime_bad_fraction(bad: str, clean_jax_env: pytest.MonkeyPatch) -> None:
    import os

    clean_jax_env.setenv(jax_runtime.MEM_FRACTION_ENV, bad)
    with pytest.raises(ValueError, match=jax_runtime.MEM_FRACTION_ENV):
        jax_runtime.apply_env()
    assert jax_runtime.apply_env(strict=False) == {}
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ


@pytest.mark.parametrize(("n", "cap", "want"), [(1, 512, 1), (3, 512, 4), (64, 512, 64),
                                                (65, 512, 128), (300, 256, 300), (500, 512, 512)])
def test_bucket(n: int, cap: int, want: int) -> None:
    assert jax_runtime.bucket(n, cap) == want


def test_jax_runtime_configure_after_import(tmp_path: Path, clean_jax_env: pytest.MonkeyPatch) -> None:
    """A JAX imported before the setting was applied gets the cache through jax.config."""
    import jax

    before = jax.config.jax_compilation_cache_dir
    clean_jax_env.setenv(jax_runtime.COMPILE_CACHE_ENV, str(tmp_path / "jc"))
    try:
        jax_runtime.configure()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jc")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
