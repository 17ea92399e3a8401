"""A quiet CLI: no TensorFlow, absl, oneDNN or CUDA lines on stderr unless asked for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2

from convatlas.producer.quiet import is_native_noise, without_noise
from convatlas.shared.samples import sample_photos

CLI = [sys.executable, "-m", "convatlas.producer.cli"]
NOISE = re.compile(r"absl|oneDNN|cuInit|cuda|tensorflow|TF_ENABLE|^[IWEF]\d{4} ", re.I | re.M)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                          "CONVATLAS_LOG_LEVEL")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600,
                          env={**e, **(env or {})})


def test_native_line_format() -> None:
    assert is_native_noise(b"I0000 00:00:1796162185.978130   11122 port.cc:153] oneDNN custom")
    assert is_native_noise(b"E0000 00:00:1796162190.079966   11122 cuda_platform.cc:52] failed")
    assert is_native_noise(b"WARNING: All log messages before absl::InitializeLog() is called a")
    assert not is_native_noise(b"error: unknown layer 'nope'")
    assert not is_native_noise(b"run g-123: 4 done")


def test_native_line_after_a_progress_bar_update() -> None:
    """TensorFlow's first op logs its banner right after a carriage-return update of the bar."""
    bar = b"\rgrids:   0%|          | 0/2 [00:00<?, ?job/s]"
    assert without_noise(bar + b"WARNING: All log messages before absl::InitializeLog() is "
                         b"called are written to STDERR") == bar
    assert without_noise(bar + b"I0000 00:00:1796162185.978130   11122 port.cc:153] oneDNN") == bar
    assert without_noise(b"run g-123: 4 done") == b"run g-123: 4 done\n"
    assert without_noise(b"I0000 00:00:1796162185.978130   11122 port.cc:153] oneDNN") is None


def test_heatmaps_and_grids_print_no_tensorflow_lines(tmp_path: Path) -> None:
    photo = tmp_path / "in" / "cat.jpg"
    photo.parent.mkdir()
    bgr = cv2.imread(str(sample_photos()[0]))
    cv2.imwrite(str(photo), cv2.resize(bgr, (96, 64)))
    heat = run("heatmaps", str(photo.parent), "--out", str(tmp_path / "o1"), "-q")
    assert heat.returncode == 0, heat.stderr
    assert NOISE.search(heat.stderr) is None, heat.stderr
    grids = run("grids", "--layers", "block1_conv1", "--filters", "0:2", "--size", "16",
                "--steps", "2", "--out", str(tmp_path / "o2"), "-q")
    assert grids.returncode == 0, grids.stderr
    assert NOISE.search(grids.stderr) is None, grids.stderr
    assert "done" in grids.stdout  # the command's own output is untouched
    # with its progress bar on stderr (no -q): the first op's banner follows a bar update
    shown = run("grids", "--model", "vgg16-hed", "--layers", "block1_conv1", "--filters", "0:2",
                "--size", "16", "--steps", "1", "--out", str(tmp_path / "o3"))
    assert shown.returncode == 0, shown.stderr
    assert "grids:" in shown.stderr  # the bar is there
    assert NOISE.search(shown.stderr) is None, shown.stderr


def test_verbose_and_errors_still_reach_stderr(tmp_path: Path) -> None:
    bad = run("grids", "--layers", "nope", "--out", str(tmp_path))
    assert bad.returncode == 2 and "unknown layer" in bad.stderr
    loud = run("--verbose", "grids", "--layers", "block1_conv1", "--filters", "0:1", "--size",
               "16", "--steps", "1", "--out", str(tmp_path / "o"), "-q")
    assert loud.returncode == 0, loud.stderr
    assert NOISE.search(loud.stderr), "--verbose should let TensorFlow's lines through"
