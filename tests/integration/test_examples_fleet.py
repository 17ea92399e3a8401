"""Dataset examples on the fleet (real Redis, SeaweedFS, a ``convatlas worker`` process): the
map tasks, the reduce queued by the last map, a bad photo failing alone, the same top-k as a
local run, and a re-submission that maps nothing and changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from convatlas.producer.plans.examples import plan_examples
from convatlas.producer.run_examples import run_examples_local, submit_examples, wait_for_examples
from convatlas.producer.submit import wait_for_run
from convatlas.shared.images.decode import decode_image
from convatlas.shared.samples import sample_photos
from convatlas.shared.storage import LocalStorage
from convatlas.shared.topk import TopK

if TYPE_CHECKING:
    from tests.pipeline_fixtures import Fleet

pytest_plugins = ["tests.pipeline_fixtures"]

WAIT_S = 300
LAYERS = "block1_conv1,block2_conv1"


def _state(storage, reduce) -> dict:  # noqa: ANN001
    return json.loads(storage.get_bytes(reduce.marker))


def test_examples_on_the_fleet_equal_a_local_run(fleet: Fleet, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sample_photos():
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 10)

    plan = plan_examples([str(folder)], "vgg16-hed", LAYERS, 4, fleet.settings, fleet.storage,
                         batch=2)
    assert len(plan.jobs) == 3  # 5 files, batches of 2
    res = submit_examples(plan, fleet.storage, fleet.app, fleet.settings)
    assert res.queued_jobs == 3
    report = wait_for_run(fleet.storage, plan.run_id, WAIT_S, progress=False)
    summary = wait_for_examples(fleet.storage, plan.run_id, WAIT_S)
    assert report["counts"]["done"] == 3 and report["counts"]["failed"] == 0
    failed = [f["name"] for j in report["jobs"] for f in j["failed_photos"]]
    assert failed == ["broken.jpg"]
    assert [row["layer"] for row in summary["layers"]] == LAYERS.split(",")
    maps = {j.batch_id for j in plan.jobs}
    for r in plan.reduces:
        state = _state(fleet.storage, r)
        assert set(state["batches"]) == maps and state["stats"]["count"] == 4
        assert decode_image(fleet.storage.get_bytes(r.page_key(0))).shape == (547, 547, 3)
        assert decode_image(fleet.storage.get_bytes(r.unit_key(0))).shape == (197, 197, 3)

    # the same request in this process: the same top-k, rank for rank
    out = tmp_path / "local"
    local_plan = plan_examples([str(folder)], "vgg16-hed", LAYERS, 4, fleet.settings,
                               LocalStorage(out), batch=2)
    run_examples_local(local_plan, out, progress=False)
    for r in plan.reduces:
        fleet_top = TopK.from_json(_state(fleet.storage, r)["topk"]).key()
        local_top = TopK.from_json(_state(LocalStorage(out), r)["topk"]).key()
        assert [[c[:3] for c in u] for u in fleet_top] == [[c[:3] for c in u] for u in local_top]

    # submitted again: nothing to map, the reduce runs and changes nothing
    before = {r.layer: _state(fleet.storage, r) for r in plan.reduces}
    again = plan_examples([str(folder)], "vgg16-hed", LAYERS, 4, fleet.settings, fleet.storage,
                          batch=2)
    assert again.jobs == []
    res2 = submit_examples(again, fleet.storage, fleet.app, fleet.settings)
    assert res2.queued_jobs == 0
    summary2 = wait_for_examples(fleet.storage, again.run_id, WAIT_S)
    assert all(row["status"] == "skipped" for row in summary2["layers"])
    assert {r.layer: _state(fleet.storage, r) for r in plan.reduces} == before


def test_atlas_in_the_bucket_resolves(fleet: Fleet) -> None:
    """The site built by the fleet's atlas task (``convatlas submit atlas --wait``) from the
    fleet's results into the bucket: every relative link of every page is an object there,
    served with its content type (a static-website bucket shows it)."""
    import posixpath
    from html.parser import HTMLParser

    from convatlas.shared.atlas import site_prefix, summary_key

    prefix = site_prefix("vgg16-hed")
    r = fleet.cli("submit", "atlas", "--model", "vgg16-hed", "--wait", "--timeout", str(WAIT_S),
                  timeout=WAIT_S + 60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 layers, 192 unit pages, 4 photo pages" in r.stdout, r.stdout
    summary = json.loads(fleet.storage.get_bytes(summary_key("vgg16-hed")))
    assert summary["layers"] == 2 and summary["units"] == 64 + 128 and summary["photos"] == 4
    assert "convatlas.build_atlas" in fleet.logs()  # built by the worker, not here

    bad = fleet.cli("submit", "atlas", "--model", "no-such-model")
    assert bad.returncode == 2 and "no-such-model" in bad.stderr, bad.stderr

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.links: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.links += [str(v) for k, v in attrs if k in ("href", "src") and v]

    todo, seen = [f"{prefix}/index.html"], set()
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        assert fleet.storage.exists(key), key
        if key.endswith(".html"):
            head = fleet.storage.client.head_object(Bucket=fleet.storage.bucket,
                                                    Key=fleet.storage._full(key))
            assert head["ContentType"].startswith("text/html")
            parser = Links()
            parser.feed(fleet.storage.get_bytes(key).decode())
            for link in (u.split("#")[0] for u in parser.links):
                if not link:  # a link within the page (the skip link)
                    continue
                assert "://" not in link and not link.startswith("/"), (key, link)
                target = posixpath.normpath(posixpath.join(posixpath.dirname(key), link))
                assert target.startswith(prefix + "/"), (key, link)
                todo.append(target)
    assert set(fleet.storage.list_keys(prefix + "/")) == seen
