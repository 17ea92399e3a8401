"""Write ``applications_layers.json.gz`` from the built graphs (random weights, no download):
each keras.applications model's Grad-CAM target and offered layers (with each layer's smallest
pattern size), so planning a run needs no TensorFlow. ``python -m convatlas.shared.models.write_application_tables [NAME...]``;
``--static`` rewrites ``layers.json`` (the other built-in models: VGG16-HED, EfficientNet-Lite)
the same way."""

from __future__ import annotations

import gzip
import json
import sys
from typing import Any


def table_of(model: Any) -> dict[str, Any]:
    """{"gradcam": target, "layers": [[name, kind, channels, min_size]]}."""
    from convatlas.shared.models import applications
    from convatlas.shared.models.registry import layer_min_sizes

    rows = applications.offered_layers(model)
    return {"gradcam": applications.gradcam_target(model),
            "layers": [[*row, m] for row, m in zip(rows, layer_min_sizes(model, rows), strict=True)]}


def main(names: list[str]) -> None:
    import keras

    from convatlas.shared.models import applications
    from convatlas.shared.models.registry import APPLICATION_LAYERS_FILE

    tables = (json.loads(gzip.decompress(APPLICATION_LAYERS_FILE.read_bytes()))
              if APPLICATION_LAYERS_FILE.is_file() else {})
    for name in names or list(applications.APPS):
        tables[name] = table_of(applications.build(name))
        keras.backend.clear_session()
        print(name, tables[name]["gradcam"], len(tables[name]["layers"]), flush=True)
    ordered = {n: tables[n] for n in applications.APPS if n in tables}
    APPLICATION_LAYERS_FILE.write_bytes(gzip.compress(json.dumps(ordered).encode(), mtime=0))


def write_static() -> None:
    """``layers.json`` from the built models it lists (``registry.built_layer_table``)."""
    from dataclasses import astuple

    from convatlas.shared.models.registry import LAYERS_FILE, built_layer_table

    names = list(json.loads(LAYERS_FILE.read_text()))
    tables = {n: [list(astuple(info)) for info in built_layer_table(n)] for n in names}
    LAYERS_FILE.write_text(json.dumps(tables, indent=1) + "\n")
    print(f"{LAYERS_FILE.name}: {', '.join(names)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--static"]:
        write_static()
    else:
        main(sys.argv[1:])
