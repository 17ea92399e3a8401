"""Object keys: derived only from hashes, validated names and parameters (content addressing).

A result's key holds everything that determines it (model, weights hash, layer, parameters or the
image's content hash, class), so a finished result is found again by any later run and nothing a
user typed as a file name can reach a key. Bump ``ENGINE_VERSION`` when the engine's output changes.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from convatlas.shared.engine.precision import key_suffix

ENGINE_VERSION = "1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def safe_name(name: str, what: str = "name") -> str:
    """A key segment taken from a validated name (layer, model); anything odd is refused."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '.', '_', '-'")
    return name


def short_hash(obj: Any, n: int = 16) -> str:
    data = obj if isinstance(obj, bytes) else json.dumps(obj, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:n]


def model_slug(model: str) -> str:
    """Built-in names as they are; user files by the hash of their reference."""
    return model if _NAME.match(model) else f"file-{short_hash(model.encode(), 12)}"


def pattern_prefix(model: str, weights_id: str, layer: str, slug: str) -> str:
    return (
        f"results/{model_slug(model)}/{weights_id[:12]}/patterns/v{ENGINE_VERSION}/"
        f"{safe_name(layer, 'layer')}/{safe_name(slug, 'parameters')}"
    )


def pattern_key(prefix: str, filter_index: int, ext: str) -> str:
    return f"{prefix}/f{filter_index:04d}.{ext}"


def grid_key(prefix: str, page: int, ext: str = "png") -> str:
    return f"{prefix}/grid-page{page:02d}.{ext}"


def input_key(sha256: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"inputs/{sha256[:2]}/{sha256}"


def gradcam_prefix(
    model: str, weights_id: str, image_sha: str, class_index: int | None, layer: str | None,
    precision: str = "float32",
) -> str:
    target = "top1" if class_index is None else f"c{int(class_index)}"
    lay = "auto" if layer is None else safe_name(layer, "layer")
    input_key(image_sha)  # validates the hash
    return (
        f"results/{model_slug(model)}/{weights_id[:12]}/gradcam/v{ENGINE_VERSION}"
        f"{key_suffix(precision)}/"
        f"{lay}/{target}/{image_sha[:2]}/{image_sha}"
    )


def run_prefix(run_id: str) -> str:
    return f"runs/{safe_name(run_id, 'run id')}"


def examples_prefix(
    model: str, weights_id: str, side: int, top: int, precision: str = "float32"
) -> str:
    """The folder of one dataset-examples configuration: per layer ``<layer>/`` (its state,
    batches of candidates, unit mosaics and pages), ``maps/`` (one marker per photo batch),
    ``photos/`` (one marker per photo and layer set) and ``layersets/``."""
    return (
        f"results/{model_slug(model)}/{weights_id[:12]}/examples/v{ENGINE_VERSION}"
        f"{key_suffix(precision)}/s{int(side)}-k{int(top)}"
    )


def examples_layer_prefix(prefix: str, layer: str) -> str:
    return f"{prefix}/{safe_name(layer, 'layer')}"
