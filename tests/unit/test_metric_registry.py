"""The faithfulness-metric registry: each metric declares its summary fields and its cost next to
its code, and the summary tables and the pass count are read from it (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from convatlas.shared import metrics_summary
from convatlas.shared.engine.metrics import (
    PROTOCOL,
    REGISTRY,
    BlendMetric,
    PassesMetric,
    Protocol,
)
from convatlas.shared.engine.metrics.base import blend_ks


def test_the_registry_is_the_names_in_their_order() -> None:
    assert metrics_summary.METRICS == tuple(REGISTRY) == ("deletion", "insertion", "road", "avgdrop")
    assert all(name == m.name for name, m in REGISTRY.items())


def test_the_summary_tables_come_from_the_declarations() -> None:
    assert metrics_summary.SCALARS == ("probability", "deletion_auc", "insertion_auc", "road",
                                       "avg_drop", "conf_increase")
    assert metrics_summary.METRIC_SCALARS["avgdrop"] == ("avg_drop", "conf_increase")
    assert metrics_summary.LABELS["road"] == "ROAD"
    assert metrics_summary.CURVES == ("deletion", "insertion")
    for m in REGISTRY.values():
        assert m.summary and all(f.label for f in m.summary), m.name


@pytest.mark.parametrize("protocol", [PROTOCOL, Protocol(steps=5, road_percentiles=(25, 75))])
def test_each_metric_counts_its_passes(protocol: Protocol) -> None:
    steps_k = blend_ks(protocol.steps, 32 * 32)
    for m in REGISTRY.values():
        assert isinstance(m, (BlendMetric, PassesMetric)), m.name
        if isinstance(m, BlendMetric):
            assert len(m.ks(steps_k)) == m.passes(protocol), m.name
    assert REGISTRY["road"].passes(protocol) == 2 * len(protocol.road_percentiles)


def test_a_blend_metric_reads_the_fields_it_declares() -> None:
    probs = np.array([0.6, 0.3, 0.1], np.float32)
    for m in REGISTRY.values():
        if isinstance(m, BlendMetric):
            assert {f.key for f in m.summary} <= set(m.read(0.9, probs)), m.name
    deletion = REGISTRY["deletion"]
    assert isinstance(deletion, BlendMetric)
    figures = deletion.read(0.9, probs)
    assert figures["deletion_curve"] == pytest.approx([0.9, 0.6, 0.3, 0.1])
    assert figures["deletion_auc"] == pytest.approx((0.9 + 2 * 0.6 + 2 * 0.3 + 0.1) / 6)


def test_the_metrics_help_names_every_registered_metric() -> None:
    """``--metrics``'s help is built from the registry: a new metric shows up there by itself."""
    from convatlas.producer.options import HEATMAP_OPTIONS
    from convatlas.shared.engine.metrics import REGISTRY

    text = HEATMAP_OPTIONS["metrics"][2]
    for m in REGISTRY.values():
        assert m.help and f"{m.name} ({m.help})" in text
