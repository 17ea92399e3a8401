"""The producer interrupted half-way through uploading a folder: nothing is queued, and
submitting again uploads only the rest and computes every photo exactly once."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from convatlas.producer.plans.heatmaps import plan_heatmaps
from convatlas.producer.submit import read_report, submit_plan
from convatlas.shared.report import manifest_key
from tests.faults.conftest import check_report, received
from tests.faults.test_bad_input import _png
from tests.unit.test_images import photo

PHOTOS = 8
CUT_AT = 4  # the 4th upload is interrupted


class Interrupting:
    """The real storage, but Ctrl-C arrives during the ``CUT_AT``-th input upload."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.uploads = inner, 0

    def put_bytes(self, key: str, *args: Any, **kw: Any) -> None:
        if key.startswith("inputs/"):
            self.uploads += 1
            if self.uploads == CUT_AT:
                raise KeyboardInterrupt
        self.inner.put_bytes(key, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_interrupted_submission_resumes_without_duplicates(make_rig, tmp_path: Path) -> None:  # noqa: ANN001
    rig = make_rig(concurrency=8)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(PHOTOS):
        (folder / f"p{i}.png").write_bytes(_png(photo(40 + i, 64, i)))
    plan = plan_heatmaps([str(folder)], "efficientnet-lite0", None, None, rig.settings)
    with pytest.raises(KeyboardInterrupt):
        submit_plan(plan, Interrupting(rig.storage), rig.app)
    uploaded = len(rig.storage.list_keys("inputs/"))  # uploads run 8 at a time: the others
    assert CUT_AT - 1 <= uploaded < PHOTOS  # in flight finish, the interrupted one is missing
    assert not rig.storage.exists(manifest_key(plan.run_id))
    assert rig.queued() == 0  # nothing queued by the broken attempt

    wait = rig.run_deadline(PHOTOS)  # at most one job per batch
    r = rig.cli("submit", "heatmaps", str(folder), "--wait", "--timeout", f"{wait:.0f}",
                timeout=wait + rig.batch_bound())  # + the CLI's own start
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{PHOTOS - uploaded} photos uploaded" in r.stdout, r.stdout
    assert re.search(rf"run {plan.run_id}: {PHOTOS} jobs queued", r.stdout), r.stdout
    check_report(rig.storage, plan, read_report(rig.storage, plan.run_id))
    # each photo uploaded once, computed once, delivered once
    assert len(rig.storage.list_keys("inputs/")) == PHOTOS
    results = rig.storage.list_keys("results/")
    assert sum(k.endswith("/record.json") for k in results) == PHOTOS
    assert received(rig.logs(), "convatlas.gradcam") == PHOTOS
    # and a third submission finds everything done: nothing uploaded or queued
    again = submit_plan(plan, rig.storage, rig.app)
    assert (again.uploaded, again.queued_jobs, again.already_done) == (0, 0, PHOTOS)
