"""JAX's process-wide runtime settings for accelerator workers: memory share and compile cache.

Two settings, both read from the environment so every process of a fleet (CLI, worker, its
children) gets the same ones without code:

* ``CONVATLAS_JAX_MEM_FRACTION`` (0 < f ≤ 1): the share of each GPU's memory JAX takes at start
  (``XLA_PYTHON_CLIENT_MEM_FRACTION``; JAX's own default is 0.75). One worker process per GPU
  can take most of it (0.9); several processes on one GPU must split it.
* ``CONVATLAS_COMPILE_CACHE`` (a directory): JAX's persistent compilation cache
  (``jax_compilation_cache_dir``). A restarted worker then loads its compiled ascent and CAM
  programs instead of compiling them again (tens of seconds per (layer, batch) on a GPU).

:func:`apply_env` only sets environment variables, so it is safe before JAX is imported (JAX
reads ``XLA_PYTHON_CLIENT_MEM_FRACTION`` when its GPU client starts and ``JAX_*`` flags at
import). :func:`configure` does the same through ``jax.config`` for a JAX already imported.
Neither overrides a variable the user set directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MEM_FRACTION_ENV = "CONVATLAS_JAX_MEM_FRACTION"
COMPILE_CACHE_ENV = "CONVATLAS_COMPILE_CACHE"
# Compilations faster than this are not worth a disk entry (JAX's default is 1 s; small
# programs recompile in milliseconds, the deep ascent loops take seconds).
MIN_COMPILE_SECONDS = "0.5"


def mem_fraction() -> str | None:
    """``CONVATLAS_JAX_MEM_FRACTION`` validated (a float in (0, 1]), or None when unset."""
    raw = os.environ.get(MEM_FRACTION_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{MEM_FRACTION_ENV}={raw!r}: a number in (0, 1]") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{MEM_FRACTION_ENV}={raw!r}: a number in (0, 1]")
    return f"{value:g}"


def compile_cache_dir() -> Path | None:
    """``CONVATLAS_COMPILE_CACHE`` as a path (created on first use), or None when unset."""
    raw = os.environ.get(COMPILE_CACHE_ENV, "").strip()
    return Path(raw).expanduser() if raw else None


def apply_env(strict: bool = True) -> dict[str, str]:
    """Translate the CONVATLAS settings into JAX's variables (before JAX is imported); returns
    what it set. Variables already set by the user win. ``strict=False`` skips an invalid
    memory share instead of raising (for package import, where it cannot be shown well)."""
    wanted: dict[str, str] = {}
    try:
        fraction = mem_fraction()
    except ValueError:
        if strict:
            raise
        fraction = None
    if fraction is not None:
        wanted["XLA_PYTHON_CLIENT_MEM_FRACTION"] = fraction
    cache = compile_cache_dir()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        wanted["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        wanted["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = MIN_COMPILE_SECONDS
    done: dict[str, str] = {}
    for name, value in wanted.items():
        if not os.environ.get(name):
            os.environ[name] = value
            done[name] = value
    return done


def configure() -> None:
    """:func:`apply_env`, and the compile cache through ``jax.config`` when JAX is already
    imported (its flags were read then). The memory share cannot change once the GPU client
    has started: set it before the first computation."""
    apply_env()
    if "jax" not in sys.modules:
        return
    import jax

    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if cache and getattr(jax.config, "jax_compilation_cache_dir", None) != cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
                                               MIN_COMPILE_SECONDS)))


def describe() -> str:
    """One line for start-up logs: the memory share and the compile cache in effect."""
    fraction = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION") or "0.75 (JAX's default)"
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or "off"
    return f"jax memory fraction {fraction}, compile cache {cache}"


def bucket(n: int, cap: int) -> int:
    """The batch size to compile for ``n`` items: the next power of two, at most ``cap`` (and
    at least ``n``). Compiled programs are per shape, so a worker whose batches vary in size
    (the batcher gathers what arrives) pads them to a few buckets rather than compiling each
    size once more."""
    if n < 1:
        raise ValueError("n must be at least 1")
    size = 1 << (n - 1).bit_length()
    return max(n, min(size, cap))
