"""The backend choice (``CONVATLAS_BACKEND`` / ``--backend``) and the JAX backend's own parts.

Keras's backend is fixed per process, so everything that runs on JAX runs in a subprocess; this
process has Keras on TensorFlow (the default). The numbers' parity is ``test_jax_parity.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax  # noqa: F401  (a dev dependency: missing JAX fails, never skips)
import pytest

from convatlas.shared import backend_select
from convatlas.shared.backend_select import BackendError, check_backend, requested_backend

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "convatlas.producer.cli"]


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in ("CONVATLAS_BACKEND", "KERAS_BACKEND")}
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**e, **(env or {})},
                          timeout=600)


def test_requested_backend_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVATLAS_BACKEND", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert requested_backend() == "tensorflow"
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # a Keras user's setting is honoured
    assert requested_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # one convatlas has no engine for is not
    assert requested_backend() == "tensorflow"
    monkeypatch.setenv("CONVATLAS_BACKEND", " JAX ")  # ours wins
    assert requested_backend() == "jax"


def test_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVATLAS_BACKEND", "torch")
    with pytest.raises(BackendError, match="choose one of tensorflow, jax"):
        check_backend()


def test_a_backend_keras_can_no_longer_follow_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    assert keras.backend.backend() == "tensorflow"
    monkeypatch.delenv("CONVATLAS_BACKEND", raising=False)
    assert check_backend() == "tensorflow"
    with pytest.raises(BackendError, match="already imported with the 'tensorflow' backend"):
        check_backend("jax")
    with pytest.raises(BackendError):
        backend_select.select_backend("jax")


def test_environment_selects_jax_before_keras_is_imported() -> None:
    code = ("import convatlas, keras\n"
            "from convatlas.shared.engine import backend\n"
            "print(keras.backend.backend(), backend.cam_builders().__name__,"
            " backend._builders('ascent').__name__)")
    p = run([sys.executable, "-c", code], {"CONVATLAS_BACKEND": "jax"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["jax", "convatlas.shared.engine.backend.jax_cam",
                                "convatlas.shared.engine.backend.jax_ascent"]


def test_cli_backend_option_and_models_line() -> None:
    p = run([*CLI, "--backend", "jax", "models", "--no-layers"])
    assert p.returncode == 0, p.stderr
    assert "backend: jax " in p.stdout and "cpu:0" in p.stdout
    p = run([*CLI, "models", "--no-layers"], {"CONVATLAS_BACKEND": "tpu"})
    assert p.returncode == 2 and "CONVATLAS_BACKEND='tpu': choose one of tensorflow, jax" in p.stderr


def test_closure_variables_find_the_weights_an_ascent_reads() -> None:
    import keras

    from convatlas.shared.engine.backend.jax_state import closure_variables
    from convatlas.shared.engine.objectives import selected_channels

    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(5, 3, activation="relu", name="c2")(x)
    y = keras.layers.Conv2D(6, 3, strides=2, name="c3")(x)
    model = keras.Model(inp, y)
    one = {id(v) for v in closure_variables(selected_channels(model, "c2"))}  # depthwise path
    assert {id(v) for v in model.variables if "c3" not in v.path} <= one
    every = {id(v) for v in closure_variables(selected_channels(model, "c3"))}  # all channels
    assert {id(v) for v in model.variables} <= every


def test_backend_is_recorded_but_not_part_of_the_result_key(tmp_path: Path) -> None:
    """The documented choice (``backend_select.active_backend``): TensorFlow and JAX agree to
    float noise, so a JAX run reuses a TensorFlow run's results in the same folder, under the
    same keys, and a fresh JAX run writes those same keys, its records saying ``jax``."""
    args = [*CLI, "grids", "--layers", "block1_conv1", "--filters", "0:3", "--size", "32",
            "--steps", "3", "-q"]
    shared, fresh = tmp_path / "shared", tmp_path / "fresh"
    p = run([*args, "--out", str(shared)])
    assert p.returncode == 0 and "3 jobs run" in p.stdout, p.stdout + p.stderr
    p = run([*args, "--out", str(shared)], {"CONVATLAS_BACKEND": "jax"})
    assert p.returncode == 0 and "0 jobs run" in p.stdout, p.stdout + p.stderr
    p = run([*args[:3], "--backend", "jax", *args[3:], "--out", str(fresh)])
    assert p.returncode == 0 and "3 jobs run" in p.stdout, p.stdout + p.stderr

    def records(out: Path) -> dict[str, dict]:
        return {str(f.relative_to(out)): json.loads(f.read_text())
                for f in out.glob("results/**/f000?.json")}

    tf_records, jax_records = records(shared), records(fresh)
    assert len(tf_records) == 3 and tf_records.keys() == jax_records.keys()
    assert {r["backend"] for r in tf_records.values()} == {"tensorflow"}
    assert {r["backend"] for r in jax_records.values()} == {"jax"}
    for key, r in tf_records.items():
        j = jax_records[key]
        assert r["dead"] == j["dead"]
        assert abs(r["final_activation"] - j["final_activation"]) <= 0.01 * abs(r["final_activation"])



def test_keys_do_not_depend_on_the_backend() -> None:
    """The documented choice (``backend_select.active_backend``): producer and worker derive a
    job's keys from its parameters, so they must not depend on the process's backend."""
    from convatlas.shared.engine.patterns import PatternParams

    code = ("import convatlas\n"
            "from convatlas.shared.engine.patterns import PatternParams\n"
            "print(PatternParams().slug(), PatternParams(precision='bfloat16').slug())")
    p = run([sys.executable, "-c", code], {"CONVATLAS_BACKEND": "jax"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [PatternParams().slug(), PatternParams(precision="bfloat16").slug()]
