"""The atlas: a static, browsable site of one model's units, built from what is in storage.

``index.html`` lists the model's layers; each layer's page shows its 8×8 pages (pattern grid,
dataset-examples grid) and a card per unit; each unit's page shows its book-style pattern, its
lucid-style pattern where computed (the keys of ``PatternParams()`` and
``PatternParams(style="lucid")``), its dataset examples (mosaic, then each photo with the
receptive field drawn on it), its dead/fallback flags and statistics (the pattern records'
start/final activations; the examples' score over the photos seen). Example photos link to a
page per photo with its Grad-CAM overlay where a heatmap run exists for the same model, and the
units it tops.

The site is self-contained: every image is copied (or made: photo thumbnails, reduced overlays)
into it and every link is relative, so the folder works opened from disk, served by any static
server, or uploaded as is to a bucket (``S3Sink``). Pages are responsive (CSS grid, viewport
meta), keyboard navigable (Tab through links; ← / → or k / j for the previous / next unit or
layer, u or Esc for up, h for the index) and every image is lazy-loaded with its size given.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from convatlas.shared import keys
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.images import ImageDecodeError, decode_photo, encode_image
from convatlas.shared.jobs.common import io_map
from convatlas.shared.render import GRID, grid_size
from convatlas.shared.storage import ObjectNotFound, Storage, validate_key

__all__ = ["AtlasSummary", "DirSink", "Sink", "StorageSink", "build_atlas", "build_into_storage",
           "site_prefix", "summary_key"]

UNITS_PER_PAGE = GRID * GRID
THUMB_SIDE = 480  # long side of the photo thumbnails
HEATMAP_SIDE = 640  # long side of the copied Grad-CAM overlays
_SHA = re.compile(r"^[0-9a-f]{64}$")
esc = html.escape


class Sink(Protocol):
    """Where the site is written: a folder, or a bucket under a prefix."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...


class DirSink:
    """A local folder (plain writes: the site is rebuilt, not a store of record)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.root.joinpath(*validate_key(key).split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class StorageSink:
    """A ``Storage`` (e.g. the fleet's bucket) under ``prefix`` (``site_prefix(model)``)."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage, self.prefix = storage, prefix.strip("/")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.storage.put_bytes(f"{self.prefix}/{key}" if self.prefix else key, data, content_type)


def site_prefix(model: str) -> str:
    """Where ``convatlas atlas --fleet`` puts a model's site in the bucket."""
    return f"atlas/{keys.model_slug(model)}"


def summary_key(model: str) -> str:
    """The last fleet build's summary (beside the site, so every key inside it is linked)."""
    return f"{site_prefix(model)}.json"


def build_into_storage(storage: Storage, model: str, settings: Any = None) -> AtlasSummary:
    """The fleet's atlas task: the site of ``model`` from the bucket's results into the same
    bucket under ``site_prefix(model)``, then its summary under ``summary_key(model)``."""
    import dataclasses

    summary = build_atlas(storage, model, StorageSink(storage, site_prefix(model)), settings)
    record = {**dataclasses.asdict(summary), "index": f"{site_prefix(model)}/index.html",
              "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    storage.put_bytes(summary_key(model), json.dumps(record, indent=1).encode(),
                      "application/json")
    return summary


@dataclass
class AtlasSummary:
    model: str
    layers: int  # layers with pages
    units: int  # unit pages
    photos: int  # photo pages
    files: int
    seconds: float
    examples: str | None  # the examples configuration shown (its key prefix), if any


@dataclass
class _Unit:
    layer: str
    index: int
    book: dict[str, Any] | None = None  # the tile's record
    lucid: dict[str, Any] | None = None
    book_png: str = ""  # results keys of the pattern images
    lucid_png: str = ""
    examples: dict[str, Any] | None = None  # the unit's examples record


@dataclass
class _Layer:
    name: str
    kind: str
    channels: int
    rf: int | None = None
    units: list[_Unit] = field(default_factory=list)
    book_pages: dict[int, str] = field(default_factory=dict)  # page → results key
    example_pages: dict[int, str] = field(default_factory=dict)

    @property
    def has_data(self) -> bool:
        return any(u.book or u.lucid or u.examples for u in self.units)

    @property
    def pages(self) -> int:
        return max(1, -(-self.channels // UNITS_PER_PAGE))


# --- finding what exists ------------------------------------------------------------------------


def _examples_config(listing: list[str], base: str) -> str | None:
    """The examples configuration to show: the one with most layers, preferring float32, k = 9."""
    found: dict[str, set[str]] = {}
    for key in listing:
        parts = key[len(base):].split("/")
        if len(parts) == 4 and parts[3] == "state.json":
            found.setdefault(f"{base}{parts[0]}/{parts[1]}", set()).add(parts[2])
    if not found:
        return None

    def rank(cfg: str) -> tuple[int, int, int, str]:
        ver, sk = cfg[len(base):].split("/")
        return (-len(found[cfg]), "-" in ver, not sk.endswith("-k9"), cfg)

    return min(found, key=rank)


def _heatmaps(listing: list[str]) -> dict[str, str]:
    """photo sha256 → the key of one Grad-CAM overlay of it (``.../<sha256>/[<variant>/]overlay.*``;
    top-1 of the default layer first, then plain Grad-CAM variants)."""
    out: dict[str, str] = {}

    def rank(key: str) -> tuple[bool, bool, str]:
        return ("/auto/top1/" not in key, "/gradcam-" not in key, key)

    for key in sorted(listing, key=rank):
        parts = key.split("/")
        if not parts[-1].startswith("overlay."):
            continue
        sha = next((p for p in reversed(parts[:-1]) if _SHA.match(p)), None)
        if sha is not None:
            out.setdefault(sha, key)
    return out


def _read(storage: Storage, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(storage.get_bytes(key))
    except (ObjectNotFound, ValueError):
        return None


# --- HTML ---------------------------------------------------------------------------------------


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


def _flags(u: _Unit) -> str:
    out = []
    for style, rec in (("book", u.book), ("lucid", u.lucid)):
        if rec and rec.get("dead"):
            out.append(f"<span class='badge' title='zero gradient on the start image'>dead ({style})</span>")
        if rec and rec.get("fallback_used"):
            out.append(f"<span class='badge fb' title='optimised before the ReLU'>fallback ({style})</span>")
    stats = (u.examples or {}).get("stats") or {}
    if stats.get("photos") and not stats.get("fired"):
        out.append("<span class='badge off'>never fired</span>")
    return " ".join(out)


# --- the build ----------------------------------------------------------------------------------


def build_atlas(
    results: Storage, model: str, sink: Sink, settings: Any = None,
    progress: Callable[[str], None] | None = None,
) -> AtlasSummary:
    """Write the site of ``model`` from the results in ``results`` into ``sink``."""
    from convatlas.shared.config import Settings
    from convatlas.shared.hashing import file_sha256
    from convatlas.shared.models.registry import get_spec, layer_table

    t0 = time.perf_counter()
    settings = settings or Settings.from_env()
    spec = get_spec(model)
    wfile = spec.weights_file(settings)
    if wfile is None:
        raise ValueError(f"{model}: no weights file here, so no results to show")
    wid = file_sha256(wfile)
    base = f"results/{keys.model_slug(model)}/{wid[:12]}/"
    pattern_keys = set(results.list_keys(f"{base}patterns/"))
    ex_listing = results.list_keys(f"{base}examples/")
    cfg = _examples_config(ex_listing, f"{base}examples/")
    ex_keys = {k for k in ex_listing if cfg and k.startswith(cfg + "/")}
    heatmaps = _heatmaps(results.list_keys(f"{base}gradcam/"))
    book_slug, lucid_slug = PatternParams().slug(), PatternParams(style="lucid").slug()

    layers: list[_Layer] = []
    for info in layer_table(model):
        layer = _Layer(info.name, info.kind, info.channels)
        bp = keys.pattern_prefix(model, wid, info.name, book_slug)
        lp = keys.pattern_prefix(model, wid, info.name, lucid_slug)
        ep = keys.examples_layer_prefix(cfg, info.name) if cfg else None
        for p in range(layer.pages):
            if keys.grid_key(bp, p) in pattern_keys:
                layer.book_pages[p] = keys.grid_key(bp, p)
            if ep and f"{ep}/page{p:02d}.png" in ex_keys:
                layer.example_pages[p] = f"{ep}/page{p:02d}.png"

        def load(u: int, name: str = info.name, bp: str = bp, lp: str = lp,
                 ep: str | None = ep) -> _Unit:
            unit = _Unit(name, u)
            if keys.pattern_key(bp, u, "json") in pattern_keys:
                unit.book = _read(results, keys.pattern_key(bp, u, "json"))
                unit.book_png = keys.pattern_key(bp, u, "png")
            if keys.pattern_key(lp, u, "json") in pattern_keys:
                unit.lucid = _read(results, keys.pattern_key(lp, u, "json"))
                unit.lucid_png = keys.pattern_key(lp, u, "png")
            if ep and f"{ep}/units/u{u:04d}.json" in ex_keys:
                unit.examples = _read(results, f"{ep}/units/u{u:04d}.json")
            return unit

        layer.units = io_map(load, range(info.channels))
        if info.kind == "Conv2D" or layer.has_data:
            layers.append(layer)
    shown = [layer for layer in layers if layer.has_data]
    side = int(cfg.rsplit("/s", 1)[1].split("-")[0]) if cfg else (spec.input_size or 224)
    fields_ = _fields(spec, side)
    for layer in layers:
        g = fields_.get(layer.name)
        layer.rf = g.rf[0] if g is not None else None
    files = 0

    def put(key: str, data: bytes, ctype: str) -> None:
        nonlocal files
        sink.put(key, data, ctype)
        files += 1

    def copy(src: str, dst: str) -> bool:
        try:
            put(dst, results.get_bytes(src), "image/png")
            return True
        except ObjectNotFound:
            return False

    put("style.css", CSS.encode(), "text/css; charset=utf-8")
    put("nav.js", JS.encode(), "application/javascript; charset=utf-8")
    put("favicon.png", _favicon(), "image/png")

    # photos: who tops what
    tops: dict[str, list[tuple[str, int, int, float]]] = {}
    names: dict[str, str] = {}
    for layer in shown:
        for u in layer.units:
            for e in (u.examples or {}).get("examples", []):
                tops.setdefault(e["image_sha256"], []).append((layer.name, u.index, e["rank"], e["score"]))
                if e.get("name"):
                    names.setdefault(e["image_sha256"], e["name"])
    photo_ok = _write_photos(results, tops, names, heatmaps, put)

    # index
    rows = []
    for layer in layers:
        n_book = sum(u.book is not None for u in layer.units)
        n_lucid = sum(u.lucid is not None for u in layer.units)
        n_ex = sum(u.examples is not None for u in layer.units)
        name = (f"<a href='{esc(layer.name)}/index.html'>{esc(layer.name)}</a>" if layer.has_data
                else f"<span class='dim'>{esc(layer.name)}</span>")
        rows.append(f"<tr><td>{name}</td><td>{esc(layer.kind)}</td><td>{layer.channels}</td>"
                    f"<td>{_num(layer.rf)}</td><td>{n_book}</td><td>{n_lucid}</td><td>{n_ex}</td></tr>")
    body = (f"<h1>{esc(model)}</h1><p class='dim'>weights {wid[:12]} · {len(shown)} of "
            f"{len(layers)} layers with results · examples: {esc(cfg or 'none')}</p>"
            "<table><thead><tr><th>layer</th><th>kind</th><th>units</th><th>receptive field (px)"
            "</th><th>book patterns</th><th>lucid patterns</th><th>units with examples</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>")
    first = shown[0].name + "/index.html" if shown else None
    nav = f"<a href='index.html' rel='home'>{esc(model)}</a>" + (
        f" <a href='{esc(first)}' rel='next'>first layer →</a>" if first else "")
    put("index.html", _page(f"{model} — convatlas atlas", "", nav, body), "text/html; charset=utf-8")

    units_written = 0
    for li, layer in enumerate(shown):
        prev_l = shown[li - 1].name if li > 0 else None
        next_l = shown[li + 1].name if li + 1 < len(shown) else None
        _write_layer(model, layer, prev_l, next_l, put, copy)
        for u in layer.units:
            prev_u = u.index - 1 if u.index > 0 else None
            next_u = u.index + 1 if u.index + 1 < layer.channels else None
            _write_unit(model, layer, u, prev_u, next_u, photo_ok, put, copy)
            units_written += 1
        if progress:
            progress(layer.name)
    return AtlasSummary(model, len(shown), units_written, len(photo_ok), files,
                        time.perf_counter() - t0, cfg)


def _write_photos(
    results: Storage, tops: dict[str, list[tuple[str, int, int, float]]], names: dict[str, str],
    heatmaps: dict[str, str], put: Callable[[str, bytes, str], None],
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


def _write_layer(
    model: str, layer: _Layer, prev_l: str | None, next_l: str | None,
    put: Callable[[str, bytes, str], None], copy: Callable[[str, str], bool],
) -> None:
    d = layer.name
    side = grid_size()
    sections = []
    for p in range(layer.pages):
        figs = []
        if p in layer.book_pages and copy(layer.book_pages[p], f"{d}/img/grid-book-{p:02d}.png"):
            figs.append(f"<figure>{_img(f'img/grid-book-{p:02d}.png', f'pattern grid page {p}', side, side)}"
                        f"<figcaption>patterns (book), page {p}</figcaption></figure>")
        if p in layer.example_pages and copy(layer.example_pages[p], f"{d}/img/grid-ex-{p:02d}.png"):
            figs.append(f"<figure>{_img(f'img/grid-ex-{p:02d}.png', f'examples page {p}', side, side)}"
                        f"<figcaption>top-1 dataset examples, page {p}</figcaption></figure>")
        cards = []
        for u in layer.units[p * UNITS_PER_PAGE:(p + 1) * UNITS_PER_PAGE]:
            pics = []
            if u.book is not None:
                pics.append(_img(f"img/book-{u.index:04d}.png", "pattern", 64, 64))
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
    body = (f"<h1>{esc(layer.name)}</h1><p class='dim'>{esc(layer.kind)} · {layer.channels} units"
            f" · receptive field {_num(layer.rf)} px · tiles row-major: unit = page·64 + row·8 + col</p>"
            + "".join(sections))
    put(f"{d}/index.html", _page(f"{model} {layer.name}", "../", nav, body), "text/html; charset=utf-8")


def _write_unit(
    model: str, layer: _Layer, u: _Unit, prev_u: int | None, next_u: int | None,
    photo_ok: dict[str, tuple[int, int]], put: Callable[[str, bytes, str], None],
    copy: Callable[[str, str], bool],
) -> None:
    from convatlas.shared.jobs.examples_reduce import TILE

    d, i = layer.name, u.index
    figs, stats = [], []
    for style, rec, src in (("book", u.book, u.book_png), ("lucid", u.lucid, u.lucid_png)):
        if rec is None:
            figs.append(f"<figure><p class='dim'>no {style}-style pattern computed</p></figure>")
            continue
        ok = copy(src, f"{d}/img/{style}-{i:04d}.png")
        figs.append(f"<figure>{_img(f'img/{style}-{i:04d}.png', f'{style} pattern', 192, 192)}"
                    f"<figcaption>pattern, {style} style</figcaption></figure>" if ok else
                    f"<figure><p class='dim'>{style} pattern image missing</p></figure>")
        stats.append(f"<tr><th colspan='2'>pattern ({style})</th></tr>"
                     f"<tr><td>dead</td><td>{_num(bool(rec.get('dead')))}</td></tr>"
                     f"<tr><td>fallback used</td><td>{_num(bool(rec.get('fallback_used')))}</td></tr>"
                     f"<tr><td>start activation</td><td>{_num(rec.get('start_activation'))}</td></tr>"
                     f"<tr><td>final activation</td><td>{_num(rec.get('final_activation'))}</td></tr>")
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
                     f"<tr><td>fired (score &gt; 0)</td><td>{_num(s.get('fired'))}</td></tr>"
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


def _favicon() -> bytes:
    """A 16 px icon (a 2×2 grid of tiles), so browsers do not ask the server for favicon.ico."""
    import numpy as np

    icon = np.zeros((16, 16, 3), np.uint8)
    for y, x in ((1, 1), (1, 9), (9, 1), (9, 9)):
        icon[y : y + 6, x : x + 6] = (120, 200, 255)
    return encode_image(icon, "png").data


def _fields(spec: Any, side: int) -> dict[str, Any]:
    """Receptive fields of the model's layers at ``side`` (empty when they cannot be computed)."""
    from convatlas.shared.engine.receptive_fields import GeometryError, receptive_fields

    try:
        return receptive_fields(spec.build(), side)
    except (GeometryError, ValueError):
        return {}


def _mosaic_px(k: int, tile: int) -> int:
    from convatlas.shared.patches import mosaic_side
    from convatlas.shared.render import MARGIN

    n = mosaic_side(k)
    return n * tile + (n - 1) * MARGIN
