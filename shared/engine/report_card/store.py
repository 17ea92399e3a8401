"""Where a report card lives in a results folder, its key, and the recommendation it leaves.

- ``report-cards/<model>/<key>/card.json`` and ``index.html``: the card. The key hashes the
  model's weights, the photo sample (its sha256s), the methods, the layers, the baselines, the
  faithfulness protocol, the randomisation settings and the precision, so a re-run with the
  same request reuses the card and any change makes a new one.
- ``report-cards/recommended/<model>-<weights id>.json``: the (method, layer) the latest card
  for those weights recommends; ``heatmaps --method auto --layer auto`` reads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convatlas.shared.keys import model_slug

ROOT = "report-cards"
FLEET_ROOT = f"results/{ROOT}"  # in the bucket (workers write only under results/); fetched as is
CARD_VERSION = 1


class NoReportCard(LookupError):
    """``auto`` was asked for but no report card recommends anything for these weights."""


def sample(photos: Sequence[tuple[str, str]], count: int) -> list[int]:
    """Indices of a deterministic sample of ``count`` photos ((name, sha256) each): the smallest
    sha256s, so the sample depends on the photos' content only (not on names or order)."""
    if count < 1:
        raise ValueError(f"--sample must be ≥ 1, got {count}")
    order = sorted(range(len(photos)), key=lambda i: (photos[i][1], photos[i][0]))
    seen: set[str] = set()
    out = []
    for i in order:
        if photos[i][1] not in seen:
            seen.add(photos[i][1])
            out.append(i)
    return out[:count]


def card_request(methods: Sequence[str], layers: Sequence[str], protocol: dict[str, Any],
                 baselines: Sequence[str], precision: str,
                 randomisation: dict[str, Any]) -> dict[str, Any]:
    """The settings a card's key covers besides the weights and the photos (``describe()`` forms)."""
    return {"methods": list(methods), "layers": list(layers), "protocol": protocol,
            "baselines": list(baselines), "precision": precision, "randomisation": randomisation}


def card_key(model: str, weights_id: str, shas: Sequence[str], request: dict[str, Any]) -> str:
    """16 hex digits identifying a card: weights, photo sample and every setting in ``request``."""
    ident = {"version": CARD_VERSION, "model": model_slug(model), "weights_id": weights_id,
             "photos": sorted(shas), **request}
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def card_dir(out: Path, model: str, key: str) -> Path:
    return out / ROOT / model_slug(model) / key


def load_card(out: Path, model: str, key: str) -> dict[str, Any] | None:
    """The stored card for ``key``, or None."""
    path = card_dir(out, model, key) / "card.json"
    return json.loads(path.read_text()) if path.is_file() else None


def save_card(out: Path, model: str, key: str, card: dict[str, Any]) -> Path:
    folder = card_dir(out, model, key)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "card.json"
    path.write_text(json.dumps({**card, "key": key}, indent=1))
    return path


def card_folder_key(model: str, key: str, root: str = ROOT) -> str:
    """The card's folder as a storage key (``root``: ``ROOT`` locally, ``FLEET_ROOT`` in a bucket)."""
    return f"{root}/{model_slug(model)}/{key}"


def recommendation_key(model: str, weights_id: str, root: str = ROOT) -> str:
    return f"{root}/recommended/{model_slug(model)}-{weights_id[:16]}.json"


def recommendation(model: str, card: dict[str, Any], card_json: str) -> dict[str, Any]:
    """What the recommendation file holds; ``card_json``: the card's path relative to the folder."""
    return {**card["recommended"], "model": model, "weights_id": card["weights_id"],
            "card": card_json}


def _recommendation_path(out: Path, model: str, weights_id: str) -> Path:
    """A local card's recommendation, else a fetched fleet card's (``FLEET_ROOT``), else the
    local path (absent)."""
    paths = [out / recommendation_key(model, weights_id, r) for r in (ROOT, FLEET_ROOT)]
    return next((p for p in paths if p.is_file()), paths[0])


def save_recommendation(out: Path, model: str, card: dict[str, Any], key: str) -> Path:
    path = out / recommendation_key(model, card["weights_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = recommendation(model, card, str(card_dir(out, model, key).relative_to(out) / "card.json"))
    path.write_text(json.dumps(rec, indent=1))
    return path


def load_recommendation(out: Path, model: str, weights_id: str) -> dict[str, Any]:
    """The recommended ``method`` and ``layer`` for these weights (``NoReportCard`` if none)."""
    path = _recommendation_path(out, model, weights_id)
    if not path.is_file():
        raise NoReportCard(
            f"--method auto / --layer auto need a report card for {model} in {out}: run "
            f"`convatlas report-card PHOTOS --model {model} --out {out}` first")
    return dict(json.loads(path.read_text()))


def resolve_auto(method: str | None, layer: str | None, rec: dict[str, Any]) -> tuple[str | None, str | None]:
    """``method`` / ``layer`` with ``auto`` replaced by the recommendation's (others kept)."""
    return (rec["method"] if method == "auto" else method,
            rec["layer"] if layer == "auto" else layer)
