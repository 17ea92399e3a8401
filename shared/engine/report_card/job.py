"""The report-card job as local mode runs it: sample the photos, reuse a stored card with the
same key or compute it, write ``card.json`` + ``index.html`` and the recommendation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convatlas.shared.engine.faithfulness import PROTOCOL, Protocol
from convatlas.shared.engine.report_card import store
from convatlas.shared.engine.report_card.baselines import BASELINES, ImageMethod
from convatlas.shared.engine.report_card.card import candidate_layers, compute_card
from convatlas.shared.engine.report_card.html import card_html
from convatlas.shared.engine.report_card.randomisation import RANDOMISATION, Randomisation
from convatlas.shared.models.registry import LoadedModel


@dataclass
class CardResult:
    card: dict[str, Any]
    key: str
    folder: Path
    reused: bool
    recommendation: Path


def run_card(
    lm: LoadedModel,
    photos: Sequence[tuple[Path, str, str]],
    out: Path,
    methods: Sequence[str],
    layers: Sequence[str] | None = None,
    count: int = 16,
    protocol: Protocol = PROTOCOL,
    randomisation: Randomisation = RANDOMISATION,
    baselines: Sequence[ImageMethod] = tuple(BASELINES.values()),
    precision: str = "float32",
    batch_size: int = 16,
) -> CardResult:
    """The card for a deterministic sample of ``count`` of ``photos`` ((path, name, sha256)),
    stored under ``out``; an existing card with the same key is reused, not recomputed."""
    from convatlas.shared.images.decode import decode_image

    chosen = [photos[i] for i in store.sample([(p[1], p[2]) for p in photos], count)]
    layers = list(layers or candidate_layers(lm))
    request = store.card_request(methods, layers, protocol.describe(), [b.name for b in baselines],
                                 precision, randomisation.describe())
    key = store.card_key(lm.name, lm.weights_id, [p[2] for p in chosen], request)
    card = store.load_card(out, lm.name, key)
    reused = card is not None
    if card is None:
        decoded = [(name, sha, decode_image(path.read_bytes())) for path, name, sha in chosen]
        card = compute_card(lm, decoded, methods, layers, protocol, randomisation, baselines,
                            precision, batch_size)
        store.save_card(out, lm.name, key, card)
        card = {**card, "key": key}
        (store.card_dir(out, lm.name, key) / "index.html").write_text(card_html(card))
    rec = store.save_recommendation(out, lm.name, card, key)
    return CardResult(card, key, store.card_dir(out, lm.name, key), reused, rec)
