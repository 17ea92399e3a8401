"""For the fleet test of a keras.applications name: a Python started with this folder on
``PYTHONPATH`` (the test's worker and CLI) accepts the random-weights file named by
``CONVATLAS_TEST_PUBLISHED_HASH`` (``NAME:MD5``) in place of Keras's published one, exactly as
``app_weights.override_published_hash`` does in-process. Nothing else changes."""

from __future__ import annotations

import os

_SPEC = os.environ.get("CONVATLAS_TEST_PUBLISHED_HASH", "")
if _SPEC:
    from convatlas.shared.models import app_weights

    _name, _, _md5 = _SPEC.partition(":")
    app_weights.override_published_hash(_name, _md5)
