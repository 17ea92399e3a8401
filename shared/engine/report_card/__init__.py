"""The CAM report card: which CAM method, at which layer, to trust for a model.

One small module per concern: ``baselines`` (random and Sobel maps every method must beat),
``randomisation`` (Adebayo et al.'s model-randomisation check), ``ranking`` (the rule and the
recommendation), ``card`` (the job: maps, faithfulness passes, rows), ``store`` (key, files,
the recommendation ``heatmaps --method auto --layer auto`` reads) and ``html`` (the page).
"""

from __future__ import annotations

from convatlas.shared.engine.report_card.baselines import BASELINES, ImageMethod
from convatlas.shared.engine.report_card.ranking import RULE

__all__ = ["BASELINES", "RULE", "ImageMethod"]
