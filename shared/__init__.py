"""The library: no Celery import, no global state beyond a per-process model cache."""
