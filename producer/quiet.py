"""A quiet command line: TensorFlow's native log lines (absl, oneDNN, CUDA probing) hidden.

TensorFlow 2.21 writes through absl straight to file descriptor 2, before and regardless of
``TF_CPP_MIN_LOG_LEVEL`` (``WARNING: All log messages before absl::InitializeLog() ...``,
``I0000 ... port.cc] oneDNN custom operations are on``, ``E0000 ... cuda_platform.cc] failed
call to cuInit`` on a CPU machine). A CLI process therefore routes fd 2 through a pipe and a
small thread that drops lines in that format and passes everything else through unchanged.
A native line can also land in the middle of a line: TensorFlow's first op logs its banner right
after a progress bar's carriage-return update, which has no newline of its own. So the noise is
cut out wherever it starts, with the newline it brought.

``CONVATLAS_LOG_LEVEL`` (``warning`` by default; ``info``/``debug`` show everything) or
``--verbose`` turn the filter off. Never used by workers: their logs are the operator's.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import warnings

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "warning"

# absl's prefix: severity letter, MMDD, time, thread id, file:line]
NATIVE_LINE = re.compile(rb"^[IWEF]\d{4} [\d:.]+\s+\d+ [^\s\]]+:\d+\] ")
NATIVE_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called"
# either of the above, anywhere in a line, up to the line's end
NATIVE_ANYWHERE = re.compile(
    rb"(?:[IWEF]\d{4} [\d:.]+\s+\d+ [^\s\]]+:\d+\] |" + re.escape(NATIVE_BANNER) + rb").*"
)

_state: dict[str, object] = {}


def log_level() -> str:
    level = os.environ.get("CONVATLAS_LOG_LEVEL", DEFAULT_LEVEL).strip().lower() or DEFAULT_LEVEL
    if level not in LEVELS:
        raise ValueError(f"CONVATLAS_LOG_LEVEL must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


def is_native_noise(line: bytes) -> bool:
    return bool(NATIVE_LINE.match(line)) or line.startswith(NATIVE_BANNER)


def without_noise(line: bytes) -> bytes | None:
    """``line`` (no newline) as it should be written, newline included; None to drop it.

    A line that is noise from some point on keeps what came before (a progress bar's update)
    without the newline, which was the native line's."""
    if is_native_noise(line):
        return None
    kept = NATIVE_ANYWHERE.sub(b"", line)
    return line + b"\n" if kept == line else kept


def _pump(read_fd: int, out_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as src:
        pending = b""
        while chunk := src.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            keep = b"".join(k for ln in lines if (k := without_noise(ln)) is not None)
            if keep:
                os.write(out_fd, keep)
        last = without_noise(pending) if pending else None
        if last:
            os.write(out_fd, last[:-1] if last.endswith(b"\n") else last)


def quiet(verbose: bool = False) -> None:
    """Hide native TensorFlow lines and Python-side TensorFlow/absl chatter for this process."""
    level = "debug" if verbose else log_level()
    if level in ("debug", "info"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|absl|google\.protobuf)(\.|$)")
    if "thread" in _state:
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_pump, args=(read_fd, original), daemon=True,
                              name="convatlas-stderr")
    thread.start()
    _state.update(thread=thread, original=original)
    atexit.register(restore)


def restore() -> None:
    """Give fd 2 back (before an exec, and at exit), after passing on what is still queued."""
    thread = _state.pop("thread", None)
    if thread is None:
        return
    original = _state.pop("original")
    assert isinstance(original, int) and isinstance(thread, threading.Thread)
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(original, 2)  # closes the pipe's last write end: the pump sees EOF and drains
    thread.join(timeout=5)
    os.close(original)
