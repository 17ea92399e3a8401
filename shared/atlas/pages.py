"""The atlas's pages: HTML (index, layer, unit and photo pages), their CSS and keyboard script,
and the images they show (copied from the results, or made: photo thumbnails, reduced overlays).

Every link is relative and every image is lazy-loaded with its size given; see the package
docstring for what each page shows.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from convatlas.shared import keys
from convatlas.shared.atlas.gather import UNITS_PER_PAGE, Gathered, Layer, PatternRef, Tops, Unit
from convatlas.shared.engine.styles import STYLES
from convatlas.shared.images.checks import ImageDecodeError
from convatlas.shared.images.decode import decode_photo
from convatlas.shared.images.encode import encode_image
from convatlas.shared.jobs.common import io_map
from convatlas.shared.render import grid_size
from convatlas.shared.storage import ObjectNotFound, Storage

__all__ = ["write_assets", "write_index", "write_layer", "write_photos", "write_unit"]

THUMB_SIDE = 480  # long side of the photo thumbnails
HEATMAP_SIDE = 640  # long side of the copied Grad-CAM overlays
esc = html.escape

#: Writes one file of the site: (key, bytes, content type).
Put = Callable[[str, bytes, str], None]
#: Copies a results key into the site: (source key, site key) → whether it existed.
Copy = Callable[[str, str], bool]


CSS = """\
:root{color-scheme:dark;--bg:#111;--fg:#ddd;--dim:#999;--card:#1c1c1c;--accent:#7cf}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
main{padding:12px;max-width:1200px;margin:auto}
a{color:var(--accent)}
a:focus-visible,button:focus-visible{outline:3px solid #fc3;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:8px;top:8px;background:#000;padding:4px}
nav.bar{display:flex;flex-wrap:wrap;gap:8px 16px;padding:8px 12px;background:#000;position:sticky;top:0}
img{max-width:100%;height:auto;background:#000}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;padding:0;list-style:none}
.cards a{display:block;background:var(--card);padding:6px;border-radius:6px;text-decoration:none;color:var(--fg)}
.cards .pair{display:grid;grid-template-columns:1fr 1fr;gap:4px}
.pages{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px}
.unit{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:16px}
.ex{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px;padding:0;list-style:none}
.ph{position:relative;display:block;line-height:0}
.ph .rf{position:absolute;border:2px solid #fc3;box-shadow:0 0 0 1px #000;min-width:6px;min-height:6px}
.badge{display:inline-block;padding:0 6px;border-radius:4px;background:#633;color:#fcc;font-size:12px}
.badge.fb{background:#553;color:#ffc}.badge.off{background:#333;color:#bbb}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #333}
.dim{color:var(--dim)}
table.sortable th{cursor:pointer}th[aria-sort=descending]::after{content:" ▼"}th[aria-sort=ascending]::after{content:" ▲"}
img.alpha{background:repeating-conic-gradient(#777 0 25%,#bbb 0 50%) 0 0/16px 16px}
@media (max-width:600px){main{padding:6px}.cards{grid-template-columns:repeat(auto-fill,minmax(110px,1fr))}}
"""

JS = """\
// Keyboard: left/right or k/j = previous/next, u or Escape = up, h = index.
document.addEventListener('keydown', function (e) {
  if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
  var t = e.target && e.target.tagName;
  if (t === 'INPUT' || t === 'TEXTAREA' || t === 'SELECT') return;
  var rel = {ArrowLeft: 'prev', k: 'prev', ArrowRight: 'next', j: 'next',
             u: 'up', Escape: 'up', h: 'home'}[e.key];
  if (!rel) return;
  var a = document.querySelector('a[rel~="' + rel + '"]');
  if (a) { e.preventDefault(); window.location.href = a.href; }
});
// Sortable tables: a click (or Enter) on a header sorts by that column (numbers by data-v).
document.addEventListener('DOMContentLoaded', function () {
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
    Array.prototype.forEach.call(table.querySelectorAll('th'), function (th, col) {
      th.tabIndex = 0;
      var sort = function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var desc = th.getAttribute('aria-sort') !== 'descending';
        var key = function (r) { var v = r.cells[col].getAttribute('data-v'); return v === null ? -Infinity : +v; };
        rows.sort(function (a, b) { return desc ? key(b) - key(a) : key(a) - key(b); });
        rows.forEach(function (r) { body.appendChild(r); });
        Array.prototype.forEach.call(table.querySelectorAll('th'), function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', desc ? 'descending' : 'ascending');
      };
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') sort(); });
    });
  });
});
"""


def _page(title: str, root: str, nav: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><link rel='stylesheet' href='{root}style.css'>"
        f"<link rel='icon' href='{root}favicon.png'>"
        f"<script src='{root}nav.js' defer></script></head><body>"
        "<a class='skip' href='#main'>skip to content</a>"
        f"<nav class='bar' aria-label='site'>{nav}</nav>"
        f"<main id='main'>{body}</main></body></html>"
    ).encode()


def _img(src: str, alt: str, w: int, h: int, cls: str = "") -> str:
    c = f" class='{cls}'" if cls else ""
    return (f"<img{c} src='{esc(src)}' alt='{esc(alt)}' width='{w}' height='{h}' "
            "loading='lazy' decoding='async'>")


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return esc(str(v))


def _flags(u: Unit) -> str:
    out = []
    for style in STYLES:
        ref = u.shown(style)
        rec = ref.record if ref else None
        if rec and rec.get("dead"):
            out.append(f"<span class='badge' title='zero gradient on the start image'>dead ({style})</span>")
        if rec and rec.get("fallback_used"):
            out.append(f"<span class='badge fb' title='optimised before the ReLU'>fallback ({style})</span>")
    stats = (u.examples or {}).get("stats") or {}
    if stats.get("photos") and not stats.get("fired"):
        out.append("<span class='badge off'>never fired</span>")
    return " ".join(out)


def write_assets(put: Put) -> None:
    """The files every page uses: the style sheet, the keyboard script and the icon."""
    put("style.css", CSS.encode(), "text/css; charset=utf-8")
    put("nav.js", JS.encode(), "application/javascript; charset=utf-8")
    put("favicon.png", _favicon(), "image/png")


def write_index(found: Gathered, put: Put) -> None:
    """``index.html``: a row per layer, linked where it has results."""
    model, layers, shown, cfg = found.model, found.layers, found.shown, found.examples
    rows = []
    for layer in layers:
        counts = "".join(
            f"<td>{sum(style in u.patterns for u in layer.units)}"
            f"{_variant_count(len(layer.variants_of(style)))}</td>" for style in STYLES)
        n_ex = sum(u.examples is not None for u in layer.units)
        name = (f"<a href='{esc(layer.name)}/index.html'>{esc(layer.name)}</a>" if layer.has_data
                else f"<span class='dim'>{esc(layer.name)}</span>")
        rows.append(f"<tr><td>{name}</td><td>{esc(layer.kind)}</td><td>{layer.channels}</td>"
                    f"<td>{_num(layer.rf)}</td>{counts}<td>{n_ex}</td></tr>")
    heads = "".join(f"<th>units with {style} patterns</th>" for style in STYLES)
    body = (f"<h1>{esc(model)}</h1><p class='dim'>weights {found.weights_id[:12]} · {len(shown)} of "
            f"{len(layers)} layers with results · examples: {esc(cfg or 'none')}</p>"
            "<table><thead><tr><th>layer</th><th>kind</th><th>units</th><th>receptive field (px)"
            f"</th>{heads}<th>units with examples</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>")
    first = shown[0].name + "/index.html" if shown else None
    nav = f"<a href='index.html' rel='home'>{esc(model)}</a>" + (
        f" <a href='{esc(first)}' rel='next'>first layer →</a>" if first else "")
    put("index.html", _page(f"{model} — convatlas atlas", "", nav, body), "text/html; charset=utf-8")


def write_photos(
    results: Storage, tops: Tops, names: dict[str, str],
    heatmaps: dict[str, str], put: Put,
) -> dict[str, tuple[int, int]]:
    """A thumbnail and a page per example photo (with its Grad-CAM overlay when there is one);
    returns the photos whose thumbnail could be made, with its (width, height)."""

    def one(sha: str) -> tuple[str, tuple[int, int]] | None:
        try:
            data = results.get_bytes(keys.input_key(sha))
            thumb = decode_photo(data, overlay_max_side=THUMB_SIDE).overlay_base
        except (ObjectNotFound, ImageDecodeError):
            return None
        assert thumb is not None
        h, w = thumb.shape[:2]
        put(f"photos/{sha}.jpg", encode_image(thumb, "jpeg", 85).data, "image/jpeg")
        heat = ""
        if sha in heatmaps:
            try:
                ov = decode_photo(results.get_bytes(heatmaps[sha]), overlay_max_side=HEATMAP_SIDE)
                assert ov.overlay_base is not None
                oh, ow = ov.overlay_base.shape[:2]
                put(f"heatmaps/{sha}.jpg", encode_image(ov.overlay_base, "jpeg", 85).data, "image/jpeg")
                heat = (f"<figure><a href='../heatmaps/{sha}.jpg'>"
                        f"{_img(f'../heatmaps/{sha}.jpg', 'Grad-CAM overlay', ow, oh)}</a>"
                        f"<figcaption>Grad-CAM overlay (<code>{esc(heatmaps[sha])}</code>)</figcaption></figure>")
            except (ObjectNotFound, ImageDecodeError):
                heat = ""
        rows = "".join(
            f"<li><a href='../{esc(layer)}/u{unit:04d}.html'>{esc(layer)} #{unit}</a> "
            f"rank {rank + 1}, score {_num(score)}</li>"
            for layer, unit, rank, score in sorted(tops[sha], key=lambda t: (t[2], -t[3])))
        title = names.get(sha) or sha[:12]
        body = (f"<h1>{esc(title)}</h1><p class='dim'>sha256 {sha}</p><div class='unit'>"
                f"<figure>{_img(f'{sha}.jpg', title, w, h)}<figcaption>photo</figcaption></figure>"
                f"{heat or '<p class=dim>no heatmap run of this photo for this model</p>'}</div>"
                f"<h2>Top example of</h2><ul>{rows}</ul>")
        nav = "<a href='../index.html' rel='home up'>index</a>"
        put(f"photos/{sha}.html", _page(title, "../", nav, body), "text/html; charset=utf-8")
        return sha, (w, h)

    return dict(got for got in io_map(one, sorted(tops)) if got is not None)


def write_layer(
    model: str, layer: Layer, prev_l: str | None, next_l: str | None,
    put: Put, copy: Copy,
) -> None:
    d = layer.name
    side = grid_size()
    sections = []
    for p in range(layer.pages):
        figs = []
        for k, v in enumerate(layer.variants):
            dst = f"img/grid-{v.style}{_vtag(k)}-{p:02d}.png"
            if p in v.pages and copy(v.pages[p], f"{d}/{dst}"):
                figs.append(f"<figure>{_img(dst, f'{v.style} pattern grid page {p}', side, side)}"
                            f"<figcaption>patterns ({esc(v.style)}: {esc(v.label)}), page {p}"
                            "</figcaption></figure>")
        if p in layer.example_pages and copy(layer.example_pages[p], f"{d}/img/grid-ex-{p:02d}.png"):
            figs.append(f"<figure>{_img(f'img/grid-ex-{p:02d}.png', f'examples page {p}', side, side)}"
                        f"<figcaption>top-1 dataset examples, page {p}</figcaption></figure>")
        cards = []
        for u in layer.units[p * UNITS_PER_PAGE:(p + 1) * UNITS_PER_PAGE]:
            pics = []
            card_style = next((style for style in STYLES if style in u.patterns), None)
            if card_style is not None:
                pics.append(_img(f"img/{card_style}-{u.index:04d}.png", f"{card_style} pattern", 64, 64))
            if u.examples is not None:
                pics.append(_img(f"img/top1-{u.index:04d}.png", "top example", 64, 64))
            cards.append(f"<li><a href='u{u.index:04d}.html'><div class='pair'>{''.join(pics)}</div>"
                         f"#{u.index} {_flags(u)}</a></li>")
        sections.append(f"<section><h2>Units {p * UNITS_PER_PAGE}–"
                        f"{min(layer.channels, (p + 1) * UNITS_PER_PAGE) - 1}</h2>"
                        f"<div class='pages'>{''.join(figs)}</div><ul class='cards'>{''.join(cards)}</ul></section>")
    nav = "<a href='../index.html' rel='home up'>" + esc(model) + "</a>"
    if prev_l:
        nav += f" <a href='../{esc(prev_l)}/index.html' rel='prev'>← {esc(prev_l)}</a>"
    if next_l:
        nav += f" <a href='../{esc(next_l)}/index.html' rel='next'>{esc(next_l)} →</a>"
    computed = "".join(f"<li>{esc(v.style)}: {esc(v.label)} — {len(v.units)} of {layer.channels} units"
                       "</li>" for v in layer.variants)
    scores = _score_table(layer)
    body = (f"<h1>{esc(layer.name)}</h1><p class='dim'>{esc(layer.kind)} · {layer.channels} units"
            f" · receptive field {_num(layer.rf)} px · tiles row-major: unit = page·64 + row·8 + col</p>"
            + (f"<p>Patterns computed (cards show the first):</p><ul>{computed}</ul>" if computed
               else "<p class='dim'>no patterns computed for this layer</p>")
            + "".join(sections) + scores)
    put(f"{d}/index.html", _page(f"{model} {layer.name}", "../", nav, body), "text/html; charset=utf-8")


def write_unit(
    model: str, layer: Layer, u: Unit, prev_u: int | None, next_u: int | None,
    photo_ok: dict[str, tuple[int, int]], put: Put, copy: Copy,
) -> None:
    from convatlas.shared.jobs.examples_reduce import TILE

    d, i = layer.name, u.index
    figs, stats = [], []
    for style in STYLES:
        refs = u.patterns.get(style, [])
        elsewhere = [v for v in layer.variants_of(style) if i not in v.units]
        if not refs:
            figs.append(f"<figure><p class='dim'>{_missing(style, d, i, elsewhere)}</p></figure>")
            continue
        figs.append(_pattern_figure(refs[0], f"img/{style}-{i:04d}.png", d, copy, 192))
        stats.append(_pattern_stats(refs[0], u.examples))
        others = [_pattern_figure(r, f"img/{style}-{i:04d}{_vtag(k)}.png", d, copy, 128)
                  for k, r in enumerate(refs[1:], start=1)]
        absent = "".join(f"<li>{esc(v.label)}</li>" for v in elsewhere)
        if others or absent:
            figs.append(
                f"<details><summary>{len(refs)} {style} pattern(s) of this unit; other parameters"
                "</summary>" + "".join(others)
                + (f"<p class='dim'>not computed for this unit:</p><ul class='dim'>{absent}</ul>"
                   if absent else "") + "</details>")
    ex_html = "<p class='dim'>no dataset examples computed</p>"
    ex = u.examples
    if ex is not None:
        side = _mosaic_px(ex.get("k", 9), TILE)
        copy(ex["mosaic"], f"{d}/img/ex-{i:04d}.png")
        copy(ex["top1"], f"{d}/img/top1-{i:04d}.png")
        items = []
        for e in ex["examples"]:
            sha = e["image_sha256"]
            t, left, b, r = (100 * v for v in e["box_fraction"])
            box = (f"<span class='rf' style='top:{max(t, 0):.2f}%;left:{max(left, 0):.2f}%;"
                   f"height:{min(b, 100) - max(t, 0):.2f}%;width:{min(r, 100) - max(left, 0):.2f}%'></span>")
            label = esc(e.get("name") or sha[:12])
            pw, ph = photo_ok.get(sha, (THUMB_SIDE, THUMB_SIDE))
            pic = (f"<a class='ph' href='../photos/{sha}.html'>{_img(f'../photos/{sha}.jpg', label, pw, ph)}{box}</a>"
                   if sha in photo_ok else "<p class='dim'>photo not available</p>")
            items.append(f"<li>{pic}<div>#{e['rank'] + 1} {label}: score {_num(e['score'])}, "
                         f"position {tuple(e['position'])}</div></li>")
        s = ex.get("stats") or {}
        stats.append("<tr><th colspan='2'>examples (score: max over positions)</th></tr>"
                     f"<tr><td>photos seen</td><td>{_num(s.get('photos'))}</td></tr>"
                     f"<tr><td>mean score</td><td>{_num(s.get('mean'))}</td></tr>"
                     f"<tr><td>std of score</td><td>{_num(s.get('std'))}</td></tr>"
                     f"<tr><td>peak score</td><td>{_num(s.get('peak'))}</td></tr>"
                     "<tr><td>photos that fired (score &gt; 0)</td>"
                     f"<td>{_fired(s.get('fired'), s.get('photos'))}</td></tr>"
                     f"<tr><td>receptive field</td><td>{ex['rf'][0]}×{ex['rf'][1]} px of {ex['input_side']}</td></tr>")
        ex_html = (f"<figure>{_img(f'img/ex-{i:04d}.png', 'examples mosaic', side, side)}"
                   f"<figcaption>top {len(ex['examples'])} patches (receptive field at the arg-max)"
                   f"</figcaption></figure><ul class='ex'>{''.join(items)}</ul>")
    nav = (f"<a href='../index.html' rel='home'>{esc(model)}</a> "
           f"<a href='index.html' rel='up'>{esc(d)}</a>")
    if prev_u is not None:
        nav += f" <a href='u{prev_u:04d}.html' rel='prev'>← #{prev_u}</a>"
    if next_u is not None:
        nav += f" <a href='u{next_u:04d}.html' rel='next'>#{next_u} →</a>"
    body = (f"<h1>{esc(d)} #{i}</h1><p>{_flags(u)}</p><div class='unit'>{''.join(figs)}</div>"
            f"<h2>Dataset examples</h2>{ex_html}<h2>Statistics</h2>"
            f"<table>{''.join(stats) or '<tr><td>none</td></tr>'}</table>")
    put(f"{d}/u{i:04d}.html", _page(f"{model} {d} #{i}", "../", nav, body), "text/html; charset=utf-8")


def _score_table(layer: Layer) -> str:
    """The layer's units with their quality scores per style shown (the first parameter set),
    sortable by any column."""
    styles = [st for st in STYLES if layer.variants_of(st)]
    if not styles:
        return ""

    def cell(v: float | None) -> str:
        return f"<td data-v='{v:.6g}'>{_num(v)}</td>" if v is not None else "<td>–</td>"

    rows = []
    for u in layer.units:
        cells = [f"<td data-v='{u.index}'><a href='u{u.index:04d}.html'>#{u.index}</a></td>"]
        for st in styles:
            ref = u.shown(st)
            rec = ref.record if ref else {}
            q = (ref.quality if ref else None) or {}
            cells += [cell(rec.get("robustness")), cell(_reached(rec, u.examples) if ref else None),
                      cell(q.get("seed_stability")), cell(q.get("path_similarity"))]
        peak = ((u.examples or {}).get("stats") or {}).get("peak")
        cells.append(cell(float(peak) if peak is not None else None))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    heads = "".join(f"<th>{st} robustness</th><th>{st} activation reached</th>"
                    f"<th>{st} seed stability</th><th>{st} path similarity</th>" for st in styles)
    return ("<h2>Quality scores</h2><p class='dim'>robustness: activation kept under random jitter, "
            "scale and rotation (0–1); activation reached: the pattern's peak over the best "
            "dataset example's; seed stability: agreement of seeds s, s+1, s+2 (1 = the same "
            "feature); path similarity: cosine with the closest top example's activations at the "
            "layers below (0–1, low = a path unlike natural images). Click a header to sort.</p>"
            f"<table class='sortable'><thead><tr><th>unit</th>{heads}<th>best example score</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def _vtag(k: int) -> str:
    """Image-name tag of a unit's or layer's ``k``-th pattern variant (none for the first)."""
    return f"-v{k}" if k else ""


def _variant_count(n: int) -> str:
    return f" <span class='dim'>({n} parameter sets)</span>" if n > 1 else ""


def _missing(style: str, layer: str, unit: int, elsewhere: list[Any]) -> str:
    """Why a unit has no ``style`` pattern, and the command that would make one."""
    run = f"<code>convatlas grids --style {esc(style)} --layers {esc(layer)} --filters {unit}</code>"
    if elsewhere:
        labels = "; ".join(esc(v.label) for v in elsewhere)
        return f"no {style}-style pattern of this unit (computed for other units only: {labels}); run {run}"
    return f"no {style}-style pattern computed for this layer; run {run}"


def _pattern_figure(ref: PatternRef, dst: str, d: str, copy: Copy, side: int) -> str:
    """One pattern image with its style and parameters as caption."""
    v = ref.variant
    if not copy(ref.png, f"{d}/{dst}"):
        return f"<figure><p class='dim'>{v.style} pattern image missing ({esc(v.label)})</p></figure>"
    pics = _img(dst, f"{v.style} pattern", side, side)
    with_alpha = ""
    rgba = dst.removesuffix(".png") + "-alpha.png"
    if ref.rgba_png and copy(ref.rgba_png, f"{d}/{rgba}"):
        pics += _img(rgba, f"{v.style} pattern with its transparency map", side, side, "alpha")
        with_alpha = " and with its transparency (the accumulated gradient) as alpha"
    return (f"<figure>{pics}"
            f"<figcaption>pattern, {v.style} style{with_alpha}<br><span class='dim'>{esc(v.label)}; "
            f"final activation {_num(ref.record.get('final_activation'))}</span></figcaption></figure>")


def _pattern_stats(ref: PatternRef, examples: dict[str, Any] | None) -> str:
    rec, v = ref.record, ref.variant
    return (f"<tr><th colspan='2'>pattern ({v.style}: {esc(v.label)})</th></tr>"
            f"<tr><td>dead</td><td>{_num(bool(rec.get('dead')))}</td></tr>"
            f"<tr><td>fallback used</td><td>{_num(bool(rec.get('fallback_used')))}</td></tr>"
            f"<tr><td>start activation</td><td>{_num(rec.get('start_activation'))}</td></tr>"
            f"<tr><td>final activation</td><td>{_num(rec.get('final_activation'))}</td></tr>"
            "<tr><td>transform robustness (activation kept under jitter, scale, rotation; 0–1)</td>"
            f"<td>{_num(rec.get('robustness'))}</td></tr>"
            "<tr><td>activation reached (peak, × the best example's)</td>"
            f"<td>{_num(_reached(rec, examples))}</td></tr>"
            + _quality_rows(ref.quality or {}))


def _quality_rows(q: dict[str, Any]) -> str:
    """Seed stability and path similarity rows (``atlas.scores``), saying why one is missing."""
    seeds = (_num(q["seed_stability"]) if q.get("seed_stability") is not None else
             "<span class='dim'>needs this unit's patterns for seeds s, s+1, s+2</span>")
    path = q.get("path_similarity")
    if path is None:
        why = ("the first conv layer has no layer below" if q.get("path_layers") == [] else
               "needs dataset examples and a conv layer below")
        path_html = f"<span class='dim'>{why}</span>"
    else:
        path_html = (f"{_num(path)} (mean over the examples {_num(q.get('path_similarity_mean'))})"
                     + (" <span class='badge fb' title='the pattern drives the unit through a path "
                        f"unlike its natural examples (below {_num(q.get('path_flag_below'))})'>"
                        "path unlike its examples</span>" if q.get("path_flagged") else ""))
    return ("<tr><td>seed stability (response profiles of seeds s, s+1, s+2 correlated; 1 = the "
            f"same feature)</td><td>{seeds}</td></tr>"
            "<tr><td>path similarity (cosine with the closest top example at the layers below; "
            f"0–1)</td><td>{path_html}</td></tr>")


def _reached(rec: dict[str, Any], examples: dict[str, Any] | None) -> float | None:
    """The pattern's peak activation over its unit's best dataset example's (both max over
    positions), when both exist."""
    best = ((examples or {}).get("stats") or {}).get("peak")
    peak = rec.get("peak_activation")
    if peak is None or not best:
        return None
    return float(peak) / float(best)


def _fired(fraction: Any, photos: Any) -> str:
    """The examples' ``fired`` statistic (a fraction of the photos seen) as a percentage and count."""
    if fraction is None:
        return "–"
    if not photos:
        return f"{100 * fraction:.0f} % of photos"
    return f"{100 * fraction:.0f} % of photos ({round(fraction * photos)} of {photos})"


def _favicon() -> bytes:
    """A 16 px icon (a 2×2 grid of tiles), so browsers do not ask the server for favicon.ico."""
    import numpy as np

    icon = np.zeros((16, 16, 3), np.uint8)
    for y, x in ((1, 1), (1, 9), (9, 1), (9, 9)):
        icon[y : y + 6, x : x + 6] = (120, 200, 255)
    return encode_image(icon, "png").data


def _mosaic_px(k: int, tile: int) -> int:
    from convatlas.shared.patches import mosaic_side
    from convatlas.shared.render import MARGIN

    n = mosaic_side(k)
    return n * tile + (n - 1) * MARGIN
