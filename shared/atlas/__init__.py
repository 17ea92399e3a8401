"""The atlas: a static, browsable site of one model's units, built from what is in storage.

``index.html`` lists the model's layers; each layer's page shows its 8×8 pages (pattern grid,
dataset-examples grid) and a card per unit; each unit's page shows its pattern in every style
computed, whatever the parameters (every result folder of the layer is found; each is labelled
with its parameters, the style's defaults first, the others under a choice), says which style or
parameter set is missing for the unit and the command that makes it (a maco pattern is shown
also with its transparency map as alpha), then its dataset examples (mosaic, then each photo with the
receptive field drawn on it), its dead/fallback flags and statistics (the pattern records'
start/final activations; the examples' score over the photos seen). Example photos link to a
page per photo with its Grad-CAM overlay where a heatmap run exists for the same model, and the
units it tops.

The site is self-contained: every image is copied (or made: photo thumbnails, reduced overlays)
into it and every link is relative, so the folder works opened from disk, served by any static
server, or uploaded as is to a bucket (``S3Sink``). Pages are responsive (CSS grid, viewport
meta), keyboard navigable (Tab through links; ← / → or k / j for the previous / next unit or
layer, u or Esc for up, h for the index) and every image is lazy-loaded with its size given.

* :mod:`.gather` — what exists in storage, read into layers and units;
* :mod:`.pages` — the HTML pages and the images they show;
* :mod:`.sinks` — where the site is written (a folder, or a bucket under ``site_prefix``);
* :mod:`.build` — ``build_atlas`` (gather, then write) and the fleet's ``build_into_storage``.
"""

from __future__ import annotations

from convatlas.shared.atlas.build import AtlasSummary, build_atlas, build_into_storage
from convatlas.shared.atlas.sinks import DirSink, Sink, StorageSink, site_prefix, summary_key

__all__ = ["AtlasSummary", "DirSink", "Sink", "StorageSink", "build_atlas", "build_into_storage",
           "site_prefix", "summary_key"]
