"""A reducer that runs while a tile is missing leaves it black and lists it; once the tile
arrives, running the reducer again (here: re-submitting the run) produces the complete grid."""

from __future__ import annotations

import json

import numpy as np

from convatlas.producer.plans.grids import plan_grids
from convatlas.producer.submit import submit_plan
from convatlas.shared.engine.patterns import PatternParams
from convatlas.shared.images.decode import decode_image
from convatlas.shared.jobs import reduce_grid
from convatlas.shared.render import tile_origin
from convatlas.shared.report import build_report, load_manifest
from tests.faults.conftest import check_report

TILES, SIZE, LOST = 8, 32, 5


def test_reducer_records_missing_tile_then_completes(make_rig) -> None:  # noqa: ANN001
    rig = make_rig(concurrency=8)
    st = rig.storage
    plan = plan_grids("vgg16-hed", "block2_conv1", f"0:{TILES}", PatternParams(SIZE, 3),
                      rig.settings)
    submit_plan(plan, st, rig.app)
    check_report(st, plan, rig.follow(plan, rig.batch_bound()).report())  # a healthy run
    (grid,) = plan.grids
    lost = grid.tile_jobs()[LOST]
    lost_png = st.get_bytes(lost.outputs()["png"])
    for key in [*lost.outputs().values(), *grid.outputs().values()]:
        st.delete(key)  # as if tile 5 had not arrived when the page was assembled

    res = reduce_grid(grid, st)
    assert res.info["missing"] == [LOST]
    page = decode_image(st.get_bytes(grid.outputs()["png"]))
    top, left = tile_origin(LOST, SIZE)
    assert not page[top:top + SIZE, left:left + SIZE].any()  # black tile
    for t in grid.tile_jobs():
        if t.filter != LOST:
            y, x = tile_origin(t.filter, SIZE)
            tile = decode_image(st.get_bytes(t.outputs()["png"]))
            assert np.array_equal(page[y:y + SIZE, x:x + SIZE], tile)
    (g,) = build_report(st, load_manifest(st, plan.run_id))["grids"]
    assert g["status"] == "incomplete" and g["missing"] == [LOST]

    # the tile is computed again and the page rebuilt
    again = submit_plan(plan, st, rig.app)
    assert again.queued_jobs == 1
    report = rig.follow(plan, rig.batch_bound()).report("the re-submission")
    check_report(st, plan, report)
    assert report["grids"][0]["status"] == "done"
    assert json.loads(st.get_bytes(grid.marker))["missing"] == []
    page = decode_image(st.get_bytes(grid.outputs()["png"]))
    assert np.array_equal(page[top:top + SIZE, left:left + SIZE], decode_image(lost_png))
