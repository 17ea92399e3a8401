"""The report card as a self-contained HTML page: the ranked table, a bar chart of the scores
and the mean deletion / insertion curves (inline SVG, no scripts, no external files)."""

from __future__ import annotations

from html import escape
from typing import Any

W, H, PAD = 420, 180, 30
FLAG = '<span title="maps unchanged by the randomised weights">flagged</span>'
COLOURS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _bars(rows: list[dict[str, Any]]) -> str:
    lo = min(0.0, *(r["score"] for r in rows))
    hi = max(1e-9, *(r["score"] for r in rows))
    bar_h = 14
    height = bar_h * len(rows) + 10
    zero = PAD + 160 + (0 - lo) / (hi - lo) * (W - 200)
    parts = [f'<svg width="{W + 20}" height="{height}" role="img" aria-label="scores">']
    for i, r in enumerate(rows):
        x = PAD + 160 + (r["score"] - lo) / (hi - lo) * (W - 200)
        left, width = min(x, zero), abs(x - zero)
        colour = "#999" if r["baseline"] else ("#d62728" if r["flagged"] else "#1f77b4")
        y = 5 + i * bar_h
        parts.append(f'<text x="0" y="{y + 11}" font-size="11">{escape(r["method"])} @ '
                     f'{escape(r["layer"])}</text>')
        parts.append(f'<rect x="{left:.1f}" y="{y}" width="{max(width, 1):.1f}" '
                     f'height="{bar_h - 3}" fill="{colour}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _curves(rows: list[dict[str, Any]], key: str) -> str:
    parts = [f'<svg width="{W}" height="{H + PAD}" role="img" aria-label="{key}">',
             f'<rect x="{PAD}" y="0" width="{W - PAD}" height="{H}" fill="none" stroke="#ccc"/>']
    for i, r in enumerate(rows):
        curve = r[key]
        pts = " ".join(
            f"{PAD + t / max(1, len(curve) - 1) * (W - PAD):.1f},{H - v * H:.1f}"
            for t, v in enumerate(curve))
        colour = "#999" if r["baseline"] else COLOURS[i % len(COLOURS)]
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5">'
                     f'<title>{escape(r["method"])} @ {escape(r["layer"])}</title></polyline>')
        parts.append(f'<text x="{PAD + 4}" y="{H + 12 + 10 * (i % 2)}" font-size="9" '
                     f'fill="{colour}" transform="translate({i * 60 % (W - 60)},0)">'
                     f'{escape(r["method"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def card_html(card: dict[str, Any]) -> str:
    """The whole page for a card (``card.compute_card``'s dict plus its ``key``)."""
    rows = card["rows"]
    rec = card["recommended"]
    head = ("<tr><th>rank</th><th>method</th><th>layer</th><th>score</th><th>insertion AUC</th>"
            "<th>deletion AUC</th><th>ROAD</th><th>randomised ρ</th><th>flag</th></tr>")
    body = "".join(
        f"<tr{' class=base' if r['baseline'] else ''}><td>{r['rank']}</td>"
        f"<td>{escape(r['method'])}</td><td>{escape(r['layer'])}</td><td>{r['score']:.4f}</td>"
        f"<td>{r['insertion_auc']:.4f}</td><td>{r['deletion_auc']:.4f}</td>"
        f"<td>{r['road']:.4f}</td><td>{r['randomised_spearman']:.3f}</td>"
        f"<td>{FLAG if r['flagged'] else ''}</td></tr>"
        for r in rows)
    best = [r for r in rows if not r["baseline"]][:5] + [r for r in rows if r["baseline"]]
    rnd = card["randomisation"]
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>CAM report card: {escape(card['model'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}td,th{{padding:2px 8px;text-align:right}}
tr.base{{color:#777}}</style></head><body>
<h1>CAM report card: {escape(card['model'])}</h1>
<p>Recommended: <b>{escape(rec['method'])}</b> at <b>{escape(rec['layer'])}</b>
({escape(rec['reason'])}). <code>convatlas heatmaps --method auto --layer auto</code> uses it.</p>
<p>{len(card['photos'])} photos; weights {escape(card['weights_id'][:16])}; key {escape(card.get('key', ''))}.
Ranking: {escape(card['rule'])}. Randomisation check (Adebayo et al. 2018): top
{rnd['layers']} weighted layers re-drawn ({escape(', '.join(rnd['randomised_layers']))});
a map whose mean Spearman ρ with the original is above {rnd['threshold']} is flagged.
Baselines (grey): {escape(', '.join(card['baselines']))}.</p>
<table><thead>{head}</thead><tbody>{body}</tbody></table>
<h2>Scores</h2>{_bars(rows)}
<h2>Mean deletion curves (lower is better)</h2>{_curves(best, 'deletion_curve')}
<h2>Mean insertion curves (higher is better)</h2>{_curves(best, 'insertion_curve')}
</body></html>
"""
