"""convatlas: shows what convolutional networks see, locally or on a Celery fleet.

The package's rooms are the checkout's top-level folders, linked in here so that everything is
imported under one name and nothing generic (``shared``, ``producer``, ``workers``) is installed:

* ``convatlas.shared``   — the library (models, engines, decoding, rendering, storage, jobs);
* ``convatlas.producer`` — planning, submission, the CLI;
* ``convatlas.workers``  — the Celery app and its thin tasks;
* ``convatlas.stack``    — the local development stack (servers, supervisor, ``convatlas stack``).
"""

from __future__ import annotations

import os as _os

# Before any TensorFlow import anywhere: its C++ INFO/WARNING lines stay hidden unless asked for
# (``CONVATLAS_LOG_LEVEL``, see ``convatlas.producer.quiet``).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before any Keras import anywhere: Keras reads KERAS_BACKEND once, so CONVATLAS_BACKEND
# (tensorflow | jax) is applied here; an unknown value is reported where it is checked
# (``convatlas.shared.backend_select.check_backend``).
from convatlas.shared.backend_select import apply_env as _apply_backend  # noqa: E402

_apply_backend()

# JAX's memory share and persistent compile cache (CONVATLAS_JAX_MEM_FRACTION,
# CONVATLAS_COMPILE_CACHE) become JAX's own variables before anything imports JAX.
from convatlas.shared.engine.backend.jax_runtime import apply_env as _apply_jax_runtime  # noqa: E402

_apply_jax_runtime(strict=False)  # a bad value is reported where JAX starts (configure)


def _version() -> str:
    """The installed distribution's version: pyproject.toml is its one source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convatlas")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "0+unknown"


__version__ = _version()
