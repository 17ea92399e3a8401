"""How the report card ranks (method, layer) pairs and picks the one to recommend.

Rule (documented in the card): per pair, the faithfulness figures are averaged over the photo
sample, and

    score = ((insertion AUC − deletion AUC) + ROAD) / 2

(each term is "higher is better": insertion and deletion AUCs lie in [0, 1], ROAD is
mean_q (LeRF_q − MoRF_q) / 2 in confidence units). Pairs are ranked by score, highest first;
ties keep the order methods and layers were asked in. Flags do not move a pair in the ranking:
they are shown beside it. The recommendation is the best-ranked *real* CAM method (not a
baseline) that is not flagged by the randomisation check, and that beats every baseline; when
none qualifies, the best-ranked real method, with the reason recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RULE = "score = ((insertion AUC − deletion AUC) + ROAD) / 2, averaged over the photo sample; highest first"


def score(row: dict[str, Any]) -> float:
    """The ranking score of one (method, layer) row from its mean figures."""
    return ((row["insertion_auc"] - row["deletion_auc"]) + row["road"]) / 2.0


def ranked(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with ``score`` and ``rank`` (1 = best) filled in, best first (stable)."""
    scored = [{**r, "score": score(r)} for r in rows]
    order = sorted(range(len(scored)), key=lambda i: -scored[i]["score"])
    out = [scored[i] for i in order]
    for n, r in enumerate(out, 1):
        r["rank"] = n
    return out


def recommend(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The recommended row of ranked ``rows`` and why it was chosen."""
    real = [r for r in rows if not r["baseline"]]
    if not real:
        raise ValueError("no real CAM method in the report card")
    best_baseline = max((r["score"] for r in rows if r["baseline"]), default=float("-inf"))
    for r in real:
        if not r["flagged"] and r["score"] > best_baseline:
            return r, "best score among the methods that pass the randomisation check and beat the baselines"
    return real[0], "no method passed the randomisation check and beat the baselines: best score taken"
