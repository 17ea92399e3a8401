#!/usr/bin/env python
"""The lucid render alone (spectrum → pixels, forward + gradient, no network), 64 tiles of
64 px, per step: today's two GEMMs vs TensorFlow's ``irfft2d``, each also compiled by XLA.

    .venv/bin/python bench/probe_lucid_render.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

S, N = 64, 64


def main() -> None:
    from convatlas.shared.engine.param.fourier import COLOR_TO_RGB, LUCID_DIVISOR, FourierImage
    from convatlas.shared.tf_env import import_tf

    tf = import_tf()
    f = FourierImage(S)
    scale = tf.constant(f.scale)

    def fft_render(v: Any) -> Any:
        v = v * scale
        img = tf.signal.irfft2d(tf.complex(v[:, 0], v[:, 1]), fft_length=[S, S])
        img = tf.transpose(img, (0, 2, 3, 1)) / LUCID_DIVISOR
        return tf.sigmoid(tf.matmul(img, COLOR_TO_RGB)) * 255.0

    def loop(render: Any, jit: bool = False) -> Any:
        @tf.function(jit_compile=jit)
        def run(v: Any, steps: Any) -> Any:
            for _ in tf.range(steps):
                with tf.GradientTape() as tape:
                    tape.watch(v)
                    total = tf.reduce_sum(tf.square(render(v)))
                v = v + 1e-6 * tape.gradient(total, v)
            return v

        return run

    v0 = tf.constant(np.stack([f.init(i, 0) for i in range(N)]))
    print("max |gemm − irfft2d| render:", float(np.abs(f.to_pixels(v0).numpy() - fft_render(v0).numpy()).max()))
    fns = {"gemm": loop(f.to_pixels), "gemm, XLA": loop(f.to_pixels, True),
           "irfft2d": loop(fft_render), "irfft2d, XLA": loop(fft_render, True)}
    for fn in fns.values():
        fn(v0, tf.constant(2)), fn(v0, tf.constant(12))
    res: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(3):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn(v0, tf.constant(4)).numpy()
            t1 = time.perf_counter()
            fn(v0, tf.constant(24)).numpy()
            t2 = time.perf_counter()
            res[k].append(((t2 - t1) - (t1 - t0)) / 20 * 1e3)
    for k, v in res.items():
        print(f"{k:<14} {statistics.median(v):6.2f} ms/step  runs {', '.join(f'{x:.1f}' for x in v)}")


if __name__ == "__main__":
    main()
