"""Building the atlas: gather one model's results from storage, then write every page into a sink."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from convatlas.shared.atlas import pages
from convatlas.shared.atlas.gather import gather
from convatlas.shared.atlas.scores import score_atlas
from convatlas.shared.atlas.sinks import Sink, StorageSink, site_prefix, summary_key
from convatlas.shared.storage import ObjectNotFound, Storage

__all__ = ["AtlasSummary", "build_atlas", "build_into_storage"]


@dataclass
class AtlasSummary:
    model: str
    layers: int  # layers with pages
    units: int  # unit pages
    photos: int  # photo pages
    files: int
    seconds: float
    examples: str | None  # the examples configuration shown (its key prefix), if any


def build_atlas(
    results: Storage, model: str, sink: Sink, settings: Any = None,
    progress: Callable[[str], None] | None = None,
) -> AtlasSummary:
    """Write the site of ``model`` from the results in ``results`` into ``sink``."""
    from convatlas.shared.config import Settings

    t0 = time.perf_counter()
    found = gather(results, model, settings or Settings.from_env())
    score_atlas(results, found)  # seed stability, path similarity (issue 27 item 2)
    shown = found.shown
    files = 0

    def put(key: str, data: bytes, ctype: str) -> None:
        nonlocal files
        sink.put(key, data, ctype)
        files += 1

    def copy(src: str, dst: str) -> bool:
        try:
            put(dst, results.get_bytes(src), "image/png")
            return True
        except ObjectNotFound:
            return False

    pages.write_assets(put)
    tops, names = found.tops()
    photo_ok = pages.write_photos(results, tops, names, found.heatmaps, put)
    pages.write_index(found, put)

    units_written = 0
    for li, layer in enumerate(shown):
        prev_l = shown[li - 1].name if li > 0 else None
        next_l = shown[li + 1].name if li + 1 < len(shown) else None
        pages.write_layer(model, layer, prev_l, next_l, put, copy)
        for u in layer.units:
            prev_u = u.index - 1 if u.index > 0 else None
            next_u = u.index + 1 if u.index + 1 < layer.channels else None
            pages.write_unit(model, layer, u, prev_u, next_u, photo_ok, put, copy)
            units_written += 1
        if progress:
            progress(layer.name)
    return AtlasSummary(model, len(shown), units_written, len(photo_ok), files,
                        time.perf_counter() - t0, found.examples)


def build_into_storage(storage: Storage, model: str, settings: Any = None) -> AtlasSummary:
    """The fleet's atlas task: the site of ``model`` from the bucket's results into the same
    bucket under ``site_prefix(model)``, then its summary under ``summary_key(model)``."""
    summary = build_atlas(storage, model, StorageSink(storage, site_prefix(model)), settings)
    record = {**asdict(summary), "index": f"{site_prefix(model)}/index.html",
              "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    storage.put_bytes(summary_key(model), json.dumps(record, indent=1).encode(),
                      "application/json")
    return summary
