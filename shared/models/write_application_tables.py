"""Write ``applications_layers.json.gz`` from the built graphs (random weights, no download):
each keras.applications model's Grad-CAM target and offered layers, so planning a run needs no
TensorFlow. ``python -m convatlas.shared.models.write_application_tables [NAME...]``."""

from __future__ import annotations

import gzip
import json
import sys
from typing import Any


def table_of(model: Any) -> dict[str, Any]:
    from convatlas.shared.models import applications

    return {"gradcam": applications.gradcam_target(model),
            "layers": [list(row) for row in applications.offered_layers(model)]}


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


if __name__ == "__main__":
    main(sys.argv[1:])
