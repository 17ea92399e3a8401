"""What this machine's CPU can do, read once per process (bf16 is fast only where it is native)."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def native_bfloat16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512_BF16 or AMX): bf16 is fast only there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
