"""The report-card planner (``convatlas submit report-card``): the request checked before any
photo is read or uploaded, the deterministic photo sample (``store.sample``), and one
``ReportCardJob`` per sampled photo; only the sampled photos are run inputs (uploaded once by
content hash, as heatmaps' are). The run's post-run step writes the card (``jobs.report_card``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from convatlas.producer.plans.inputs import hash_inputs
from convatlas.producer.plans.plan import Plan, PlanError, run_id_of
from convatlas.producer.plans.validate import (
    checked_precision,
    model_weights_id,
    parse_layers,
    resolve_model,
)
from convatlas.shared.config import Settings
from convatlas.shared.jobs.report_card import ReportCardJob

if TYPE_CHECKING:
    from convatlas.shared.engine.faithfulness import Protocol
    from convatlas.shared.engine.report_card.randomisation import Randomisation

__all__ = ["CardRequest", "card_request", "plan_report_card"]


@dataclass(frozen=True)
class CardRequest:
    """A checked report-card request (what the card's key covers, the photos aside)."""

    model: str
    methods: tuple[str, ...]
    layers: tuple[str, ...] | None  # None: the model's candidate layers
    sample: int
    protocol: Protocol
    randomisation: Randomisation
    precision: str


def card_request(model: str, methods: str, layers: str, sample: int, steps: int,
                 road_percentiles: str, randomise_layers: int, precision: str) -> CardRequest:
    """The request checked as the CLI takes it (``PlanError`` saying what is valid)."""
    from convatlas.shared.engine.cams import METHODS, check_methods
    from convatlas.shared.engine.faithfulness import Protocol
    from convatlas.shared.engine.report_card.randomisation import Randomisation

    spec = resolve_model(model)
    if not spec.can_gradcam:
        raise PlanError(spec.grad_cam_hint or f"{model} has no classifier for CAMs")
    checked_precision(precision)
    if sample < 1 or randomise_layers < 1:
        raise PlanError("--sample and --randomise-layers must be ≥ 1")
    try:
        names = tuple(METHODS) if methods.strip() == "all" else check_methods(methods)
        chosen = (None if layers.strip() == "auto"
                  else tuple(n for n, _ in parse_layers(model, layers)))
        protocol = Protocol(steps=steps, road_percentiles=tuple(
            int(q) for q in road_percentiles.split(",") if q.strip()))
    except PlanError:
        raise
    except ValueError as exc:
        raise PlanError(str(exc)) from exc
    return CardRequest(model, names, chosen, sample, protocol,
                       Randomisation(layers=randomise_layers), precision)


def plan_report_card(paths: Sequence[str], request: CardRequest, settings: Settings) -> Plan:
    """One job per sampled photo, keyed by the card's key (``store.card_key``). ``auto``
    layers are the model's candidate layers (the model is loaded once to find them)."""
    from convatlas.shared.engine.report_card import store
    from convatlas.shared.engine.report_card.baselines import BASELINES

    inputs, rejected = hash_inputs(list(paths))
    if not inputs:
        raise PlanError("no images found")
    layers = request.layers
    if layers is None:
        from convatlas.shared.engine.report_card.card import candidate_layers
        from convatlas.shared.models.registry import get_model

        layers = tuple(candidate_layers(get_model(request.model, settings)))
    chosen = [inputs[i] for i in store.sample([(f.name, f.sha256) for f in inputs], request.sample)]
    wid = model_weights_id(request.model, settings)
    protocol = request.protocol.describe()
    randomisation = request.randomisation.describe()
    baselines = tuple(BASELINES)
    key = store.card_key(request.model, wid, [f.sha256 for f in chosen], store.card_request(
        request.methods, layers, protocol, baselines, request.precision, randomisation))
    jobs = [ReportCardJob(request.model, wid, f.sha256, key, request.methods, layers, protocol,
                          randomisation, baselines, request.precision, f.name) for f in chosen]
    plan = Plan("report-card", request.model, list(jobs), inputs=chosen, rejected=rejected)
    plan.run_id = run_id_of("report-card", plan.jobs)
    return plan
