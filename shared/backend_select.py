"""Which tensor framework runs the engines: ``CONVATLAS_BACKEND`` = ``tensorflow`` (default) | ``jax``.

Keras reads ``KERAS_BACKEND`` once, when it is first imported, and cannot switch afterwards in
the same process. So the choice is made as early as possible: ``convatlas/__init__.py`` calls
:func:`apply_env` (sets ``KERAS_BACKEND`` from ``CONVATLAS_BACKEND`` before anything imports
Keras), the CLI's ``--backend`` calls :func:`select_backend` before any command runs, and the
engines' door (``engine.backend``) calls :func:`check_backend`, which fails with a clear
:class:`BackendError` for an unknown name or for a Keras already imported with another backend.

With ``CONVATLAS_BACKEND`` unset, a ``KERAS_BACKEND`` of ``tensorflow`` or ``jax`` is honoured
(Keras users may already set it); otherwise TensorFlow.
"""

from __future__ import annotations

import os
import sys

BACKENDS = ("tensorflow", "jax")
DEFAULT = "tensorflow"
ENV = "CONVATLAS_BACKEND"


class BackendError(RuntimeError):
    """An unknown backend name, or a choice Keras can no longer follow in this process."""


def requested_backend() -> str:
    """The backend the environment asks for (not validated: see :func:`check_backend`)."""
    name = os.environ.get(ENV, "").strip().lower()
    if name:
        return name
    keras_name = os.environ.get("KERAS_BACKEND", "").strip().lower()
    return keras_name if keras_name in BACKENDS else DEFAULT


def _keras_backend() -> str | None:
    """The backend of an already-imported Keras, or None when Keras is not imported yet."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return str(keras.backend.backend())
    except AttributeError:  # keras is being imported right now
        return os.environ.get("KERAS_BACKEND")


def apply_env() -> None:
    """Point ``KERAS_BACKEND`` at the requested backend if Keras is not imported yet; never raises
    (an unknown name is reported by :func:`check_backend` where it can be shown properly)."""
    name = requested_backend()
    if name in BACKENDS and _keras_backend() is None:
        os.environ["KERAS_BACKEND"] = name


def check_backend(name: str | None = None) -> str:
    """The validated backend (``name`` or the environment's); :class:`BackendError` if unknown or
    if Keras is already imported with another backend."""
    name = (name or requested_backend()).strip().lower()
    if name not in BACKENDS:
        raise BackendError(f"{ENV}={name!r}: choose one of {', '.join(BACKENDS)}")
    loaded = _keras_backend()
    if loaded is not None and loaded != name:
        raise BackendError(
            f"backend {name!r} asked for, but Keras was already imported with the {loaded!r} "
            f"backend in this process: set {ENV} (or --backend) before anything imports Keras"
        )
    return name


def select_backend(name: str | None = None) -> str:
    """Choose the backend for this process (and the processes it starts): validates, then sets
    ``CONVATLAS_BACKEND`` and ``KERAS_BACKEND``. Call before Keras is imported."""
    name = check_backend(name)
    os.environ[ENV] = name
    os.environ["KERAS_BACKEND"] = name
    return name


def devices() -> list[str]:
    """The devices the selected backend computes on (imports the framework)."""
    name = check_backend()
    if name == "jax":
        import jax

        return [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()]
    from convatlas.shared.tf_env import import_tf

    tf = import_tf()
    gpus = tf.config.list_physical_devices("GPU")
    return [f"gpu:{i} ({g.name})" for i, g in enumerate(gpus)] or ["cpu"]


def describe() -> str:
    """One line for start-up logs and ``convatlas models``: backend, version, devices."""
    name = check_backend()
    if name == "jax":
        import jax

        version = jax.__version__
    else:
        from convatlas.shared.tf_env import import_tf

        version = import_tf().__version__
    return f"backend: {name} {version} on {', '.join(devices())}"


def active_backend() -> str:
    """The backend this process computes with: what every record carries as ``backend``.

    Not part of result keys. In float32 TensorFlow and JAX agree to float noise (CAM maps
    ≤ 1e-4, pattern objectives ≤ 1 %, metrics ≤ 1e-3: ``tests/engine/test_jax_parity.py``),
    the same order as two CPUs or two batch sizes on one backend, so a result made on either
    backend is reused by the other and a fleet may mix TensorFlow and JAX workers. In bfloat16
    they differ by bfloat16's own rounding (measured on this CPU: maps up to 0.035 apart,
    pattern objectives up to 2.3 %, as far as bfloat16 from float32), and still share keys: a
    key is derived from the job's parameters by the producer and again by the worker, so a key
    that named the computing process's backend would strand a mixed fleet's jobs. Keeping
    bfloat16 results apart by backend needs the backend as a job parameter (not done).
    """
    return check_backend()
