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
# (``CONVATLAS_LOG_LEVEL``, see ``convatlas.shared.logs``).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"
