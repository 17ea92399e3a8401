"""The one sha256 of a file: streamed in 1 MiB chunks, memoised for large unchanged files."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20
_memo: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, bytes read) of a file, one chunk in memory at a time."""
    h, n = hashlib.sha256(), 0
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per process by (path, size, mtime): weights are large."""
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        _memo[key] = sha256_file(path)[0]
    return _memo[key]
