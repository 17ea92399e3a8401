"""Planning without TensorFlow: the built-in models' static layer tables equal the built models'."""

from __future__ import annotations

import subprocess
import sys

import pytest

from convatlas.shared.models.applications import APPS
from convatlas.shared.models.registry import BUILTIN, _static_layers, built_layer_table


# the keras.applications tables are checked in test_applications (each model built once)
@pytest.mark.parametrize("name", sorted(n for n in BUILTIN if n not in APPS or n == "vgg16"))
def test_static_table_matches_the_built_model(name: str) -> None:
    assert _static_layers()[name] == built_layer_table(name)


def test_planning_a_grid_run_imports_no_tensorflow() -> None:
    code = ("import sys; from convatlas.producer.plans.grids import plan_grids; "
            "from convatlas.shared.config import Settings; "
            "from convatlas.shared.engine.patterns import PatternParams; "
            "p = plan_grids('vgg16-hed', 'all', 'all', PatternParams(), Settings.from_env()); "
            "print(len(p.jobs), len(p.grids), 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4224", "66", "False", "False"], out.stderr
