"""The atlas of a (tiny) model: every page and image resolves over HTTP (crawled from the
index: no 404 over the whole site), pages are lazy/responsive, and in headless Chromium the
index loads and navigation index → layer → unit → next unit (keyboard) → back → up works.

The results come from the real job functions (patterns book and lucid, dataset examples,
Grad-CAM) on a tiny saved Keras classifier, so this needs no servers besides a loopback
``http.server``."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlparse
from urllib.request import urlopen

import keras
import numpy as np
import pytest

from convatlas.shared.images.encode import encode_png

SIDE = 32


def _tiny_classifier(path: Path) -> None:
    keras.utils.set_random_seed(1)
    inp = keras.Input((SIDE, SIDE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv_a")(inp)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", padding="same", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(5, name="logits")(x)).save(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    from convatlas.producer.local import run_local
    from convatlas.producer.plans.examples import plan_examples
    from convatlas.producer.plans.grids import plan_grids
    from convatlas.producer.plans.heatmaps import plan_heatmaps
    from convatlas.producer.run_examples import run_examples_local
    from convatlas.shared.atlas import DirSink, build_atlas
    from convatlas.shared.config import Settings
    from convatlas.shared.engine.patterns import PatternParams
    from convatlas.shared.storage import LocalStorage

    root = tmp_path_factory.mktemp("atlas")
    model = f"{root / 'tiny.keras'}#none"
    _tiny_classifier(root / "tiny.keras")
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        (photos / f"photo {i}.png").write_bytes(encode_png(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)))
    out = root / "out"
    settings = Settings.from_env()
    # as a user would: non-default parameters (lucid in 8 steps on one layer only; a second book
    # run at another size for two units), found by the atlas under their own keys
    for layers, filters, params in (("all", "all", PatternParams()),
                                    ("last_conv", "all", PatternParams(style="lucid", steps=8)),
                                    ("last_conv", "0:2", PatternParams(size=16, steps=3)),
                                    ("last_conv", "0:2", PatternParams(style="maco", steps=3))):
        run_local(plan_grids(model, layers, filters, params, settings), out, progress=False)
    run_local(plan_heatmaps([str(photos / "photo 0.png"), str(photos / "photo 1.png")], model,
                            None, None, settings), out, progress=False)
    plan = plan_examples([str(photos)], model, "conv_a,last_conv", 4, settings, LocalStorage(out),
                         batch=3, side=SIDE)
    run_examples_local(plan, out, progress=False)
    dest = root / "served" / "site"
    summary = build_atlas(LocalStorage(out), model, DirSink(dest), settings)
    yield dest, summary


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.meta: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("href", "src"):
            if a.get(name):
                self.links.append(str(a[name]))
        if tag == "img":
            self.imgs.append(a)
        if tag == "meta":
            self.meta.append(a)


@pytest.fixture(scope="module")
def server(site: tuple[Path, object]) -> Iterator[tuple[str, dict[str, int]]]:
    """The folder above the site on a free loopback port; every request's status recorded."""
    served = site[0].parent
    statuses: dict[str, int] = {}

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(served), **kw)  # type: ignore[arg-type]

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            statuses[self.path] = int(code) if str(code).isdigit() else 0

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", statuses
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_every_page_and_image_resolves(site: tuple[Path, object], server: tuple[str, dict[str, int]]) -> None:
    dest, summary = site
    base, _ = server
    start = urljoin(base, "site/index.html")
    seen: dict[str, int] = {}
    pages = [start]
    html_pages = 0
    while pages:
        url = pages.pop()
        if url in seen:
            continue
        with urlopen(url) as resp:  # raises HTTPError on a 404
            seen[url] = resp.status
            body = resp.read()
        if not url.endswith(".html"):
            assert body, url
            continue
        html_pages += 1
        parser = _Links()
        parser.feed(body.decode())
        assert any(m.get("name") == "viewport" for m in parser.meta), url
        for img in parser.imgs:
            assert img.get("loading") == "lazy" and img.get("width") and img.get("height"), (url, img)
        for link in parser.links:
            target = urljoin(url, link).split("#")[0]
            assert urlparse(target).netloc == urlparse(base).netloc, (url, link)  # relative only
            assert target.startswith(urljoin(base, "site/")), (url, link)  # never outside the site
            if target not in seen:
                pages.append(target)
    assert set(seen.values()) == {200}
    files = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    reached = {urlparse(u).path.removeprefix("/site/") for u in seen}
    assert files == reached  # every file is linked from somewhere, every link is a file
    assert summary.units == 4 + 6 and summary.layers == 2  # type: ignore[attr-defined]
    assert summary.photos >= 1  # type: ignore[attr-defined]
    assert html_pages == 1 + 2 + 10 + summary.photos  # type: ignore[attr-defined]
    unit = (dest / "last_conv" / "u0000.html").read_text()
    assert "pattern, book style" in unit and "pattern, lucid style" in unit
    assert "ex-0000.png" in unit and "class='rf'" in unit and "final activation" in unit
    assert "grid-book-v1-00.png" in (dest / "last_conv" / "index.html").read_text()
    photo_pages = [p.read_text() for p in (dest / "photos").glob("*.html")]
    assert any("Grad-CAM overlay" in p for p in photo_pages)  # a heatmap run exists for two photos


def test_unit_pages_show_every_parameter_set_and_what_is_missing(site: tuple[Path, object]) -> None:
    """Issue 27 item 4: patterns made with non-default parameters are shown, labelled with them;
    several sets of one style give a choice; what is missing is said, with the command to make it."""
    dest, _ = site
    unit0 = (dest / "last_conv" / "u0000.html").read_text()
    assert "no book-style pattern computed" not in unit0 and "no lucid-style" not in unit0
    assert "pattern, lucid style<br><span class='dim'>64 px, 8 steps, learning rate 0.05, seed 0;" in unit0
    assert "64 px, 40 steps, step size 1, seed 0 (default)" in unit0  # the book's first: default
    assert "<details><summary>2 book pattern(s)" in unit0 and "16 px, 3 steps, step size 1" in unit0
    assert (dest / "last_conv" / "img" / "book-0000-v1.png").is_file()
    unit3 = (dest / "last_conv" / "u0003.html").read_text()
    assert "not computed for this unit:" in unit3 and "16 px, 3 steps" in unit3
    conv_a = (dest / "conv_a" / "u0001.html").read_text()
    assert ("no lucid-style pattern computed for this layer; run <code>convatlas grids --style lucid "
            "--layers conv_a --filters 1</code>") in conv_a
    assert "photos that fired (score &gt; 0)" in conv_a and "% of photos (" in conv_a
    layer = (dest / "last_conv" / "index.html").read_text()
    assert "lucid: 64 px, 8 steps, learning rate 0.05, seed 0 — 6 of 6 units" in layer
    assert "book: 16 px, 3 steps, step size 1, seed 0 — 2 of 6 units" in layer
    index = (dest / "index.html").read_text()
    assert "units with lucid patterns" in index and "(2 parameter sets)" in index


def test_maco_patterns_are_shown_with_their_transparency(site: tuple[Path, object]) -> None:
    from convatlas.shared.engine.param.spectra import shipped_id

    dest, _ = site
    unit0 = (dest / "last_conv" / "u0000.html").read_text()
    assert "pattern, maco style and with its transparency" in unit0
    assert f"64 px, 3 steps, learning rate 1, seed 0, spectrum {shipped_id()[:12]}" in unit0
    assert (dest / "last_conv" / "img" / "maco-0000.png").is_file()
    assert (dest / "last_conv" / "img" / "maco-0000-alpha.png").read_bytes()[25] == 6  # RGBA PNG
    assert "no maco-style pattern of this unit" in (dest / "last_conv" / "u0004.html").read_text()
    assert "no maco-style pattern computed for this layer" in (dest / "conv_a" / "u0000.html").read_text()


def test_quality_scores_on_unit_pages_and_sortable_on_layer_pages(site: tuple[Path, object]) -> None:
    """Issue 27 item 2 (in part): the records' robustness and the activation reached relative to
    the best example are shown per unit, and sortable on the layer page."""
    import re

    dest, _ = site
    unit = (dest / "last_conv" / "u0000.html").read_text()
    assert "transform robustness" in unit and "activation reached" in unit
    layer = (dest / "last_conv" / "index.html").read_text()
    assert "<table class='sortable'>" in layer
    assert "<th>book robustness</th><th>book activation reached</th>" in layer
    assert "<th>maco robustness</th>" in layer
    assert "<th>book seed stability</th><th>book path similarity</th>" in layer
    assert "path similarity (cosine with the closest top example" in unit  # conv_a lies below
    assert re.search(r"path similarity \(cosine[^<]*</td><td>[0-9.]+ \(mean over", unit)
    values = [float(v) for v in re.findall(r"<td data-v='([^']+)'>", layer)]
    assert len(values) >= 6 * 3 and all(np.isfinite(values))
    assert "table.sortable" in (dest / "nav.js").read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

HARNESS = """<!doctype html><meta charset="utf-8"><link rel="icon" href="site/favicon.png"><body><pre id="out">pending</pre>
<iframe id="f" src="site/index.html" width="1200" height="800"></iframe>
<script>
var log = [], f = document.getElementById('f'), step = 0;
function doc() { return f.contentWindow.document; }
function path() { return f.contentWindow.location.pathname; }
function images() {  // visible images are loaded (lazy ones below the fold are not asked for)
  var bad = [];
  Array.prototype.forEach.call(doc().images, function (im) {
    var r = im.getBoundingClientRect();
    if (r.top < 800 && r.bottom > 0 && !(im.complete && im.naturalWidth > 0)) bad.push(im.src);
  });
  return bad;
}
function key(k) { doc().dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true})); }
var steps = [
  function () { log.push(['index', path(), images()]); doc().querySelector('a[href$="index.html"]:not([rel])').click(); },
  function () { log.push(['layer', path(), images()]); doc().querySelector('.cards a').click(); },
  function () { log.push(['unit', path(), images()]); key('ArrowRight'); },
  function () { log.push(['next', path(), images()]); f.contentWindow.history.back(); },
  function () { log.push(['back', path(), images()]); key('u'); },
  function () { log.push(['up', path(), images()]); doc().querySelector('a[rel~="home"]').click(); },
  function () { log.push(['home', path(), images()]); document.getElementById('out').textContent = JSON.stringify(log); },
];
f.addEventListener('load', function () { setTimeout(function () { steps[step++](); }, 300); });
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_chromium_loads_and_navigates(site: tuple[Path, object], server: tuple[str, dict[str, int]],
                                      tmp_path: Path) -> None:
    assert CHROMIUM is not None, "chromium is not installed (scripts/setup.sh installs it)"
    dest, _ = site
    base, statuses = server
    dom = _chromium("--dump-dom", urljoin(base, "site/index.html")).stdout
    assert "<table>" in dom and "last_conv/index.html" in dom and "conv_a/index.html" in dom

    (dest.parent / "harness.html").write_text(HARNESS)
    got = _chromium("--window-size=1400,900", "--virtual-time-budget=30000", "--dump-dom",
                    urljoin(base, "harness.html"))
    text = got.stdout
    start = text.index('<pre id="out">') + len('<pre id="out">')
    log = json.loads(text[start : text.index("</pre>", start)].replace("&quot;", '"'))
    where = {step: p.removeprefix("/site/") for step, p, _ in log}
    assert where == {"index": "index.html", "layer": "conv_a/index.html",
                     "unit": "conv_a/u0000.html", "next": "conv_a/u0001.html",
                     "back": "conv_a/u0000.html", "up": "conv_a/index.html", "home": "index.html"}
    assert all(bad == [] for _, _, bad in log), log
    assert not [p for p, code in statuses.items() if code >= 400]

    for name, size in (("phone", "390,844"), ("desktop", "1400,900")):
        shot = tmp_path / f"{name}.png"
        _chromium(f"--window-size={size}", f"--screenshot={shot}", "--virtual-time-budget=5000",
                  urljoin(base, "site/last_conv/u0000.html"))
        assert shot.stat().st_size > 5000
        assert hashlib.sha256(shot.read_bytes()).hexdigest()
