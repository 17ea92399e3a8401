"""Smoke runs only: make ``import tensorflow`` fail in every process, as on the H200 (which has
no TensorFlow), so a CPU smoke run proves the JAX worker path never imports it.
``run.sh --smoke --no-tf`` puts this folder first on PYTHONPATH."""

import importlib.abc
import sys


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"{name}: blocked (the H200 has no TensorFlow; run.sh --no-tf)")
        return None


sys.meta_path.insert(0, _NoTensorFlow())
