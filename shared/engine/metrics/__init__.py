"""The faithfulness-metric registry: name → metric (one small module per metric).

``check_metrics`` (``convatlas.shared.metrics_summary``) validates a request before anything is
queued; ``convatlas.shared.engine.faithfulness`` computes the asked metrics from the registry,
and ``metrics_summary`` aggregates and shows the summary fields each metric declares.

- ``deletion`` (blend): ``deletion_auc``, ``deletion_curve``; ``steps`` passes (20);
- ``insertion`` (blend): ``insertion_auc``, ``insertion_curve``; ``steps`` passes (20);
- ``road`` (its own passes): ``road``, ``road_morf``, ``road_lerf``; 2 × percentiles (18);
- ``avgdrop`` (blend): ``avg_drop``, ``conf_increase``, ``masked_probability``; 1 pass.

Every photo also costs one unperturbed pass (``probability``), shared by all blend metrics.
Registry order is the order of the passes in the shared blend program and of the figures in a
record; it is kept as it is so that figures and records do not change.
"""

from __future__ import annotations

from convatlas.shared.engine.metrics.avgdrop import AvgDrop
from convatlas.shared.engine.metrics.base import (
    BlendMetric,
    FaithfulnessMetric,
    PassesMetric,
    SummaryField,
)
from convatlas.shared.engine.metrics.deletion import Deletion
from convatlas.shared.engine.metrics.insertion import Insertion
from convatlas.shared.engine.metrics.protocol import BASELINES, PROTOCOL, Protocol
from convatlas.shared.engine.metrics.road import Road

__all__ = ["BASELINES", "METRICS", "PROTOCOL", "REGISTRY", "BlendMetric", "FaithfulnessMetric",
           "PassesMetric", "Protocol", "SummaryField"]

REGISTRY: dict[str, FaithfulnessMetric] = {
    m.name: m for m in (Deletion(), Insertion(), Road(), AvgDrop())
}
METRICS: tuple[str, ...] = tuple(REGISTRY)
