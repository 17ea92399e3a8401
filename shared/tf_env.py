"""Import TensorFlow/Keras quietly and with GPU memory growth, in one place.

Everything in ``shared`` that needs TensorFlow imports it through ``import_tf()`` so the CLI can
stay TensorFlow-free until real work starts (``--help`` must be fast), and so GPU hosts never
grab all device memory at start-up (several workers may share one GPU). ``CONVATLAS_TF_THREADS``
(default: TensorFlow's, one per core) caps its CPU threads, for several workers on one host.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any


@cache
def import_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    threads = os.environ.get("CONVATLAS_TF_THREADS", "")
    if threads.strip() not in ("", "0"):  # several workers on one host: each its share
        # read by TensorFlow when its runtime starts (after import, before the first op)
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(int(threads)))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(int(threads)))
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: nothing to do
            pass
    return tf


def prepare_keras() -> None:
    """Before building or loading a Keras model: TensorFlow's set-up (:func:`import_tf`) when
    TensorFlow is the backend; nothing on JAX (``CONVATLAS_BACKEND=jax``), whose workers may have
    no TensorFlow installed at all (a GPU host with ``jax[cuda]``)."""
    # backend_select.requested_backend's rule, read here (that module imports this one)
    name = os.environ.get("CONVATLAS_BACKEND", "").strip() or os.environ.get("KERAS_BACKEND", "")
    if name.strip().lower() != "jax":
        import_tf()
