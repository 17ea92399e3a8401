"""The architecture as a test: the import graph built from the source has no cycles, the library
and the workers never import the producer, and the library never imports Celery."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOMS = ("shared", "producer", "workers", "stack")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["convatlas", *parts])


def modules() -> dict[str, Path]:
    found = {"convatlas": REPO / "convatlas" / "__init__.py"}
    for room in ROOMS:
        for path in sorted((REPO / room).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (function-level imports count too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:  # `from pkg import name`: the module pkg.name or pkg
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges = {n: imports_of(n, p, known) for n, p in mods.items()}
    for n in edges:  # importing a package's module runs the package's __init__: not an edge
        edges[n] = {t for t in edges[n] if not n.startswith(t + ".")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_project() -> None:
    edges = graph()
    assert "convatlas.shared.jobs.kinds" in edges
    assert "convatlas.shared.jobs.patterns" in edges["convatlas.shared.jobs.kinds"]
    assert "convatlas.shared.storage" in edges["convatlas.shared.jobs.common"]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_detector_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("room", ["shared", "workers"])
def test_no_edge_into_the_producer(room: str) -> None:
    bad = [(a, b) for a, deps in graph().items() if a.startswith(f"convatlas.{room}")
           for b in deps if b.startswith("convatlas.producer") or b.startswith("convatlas.stack")]
    assert bad == []


def test_the_library_imports_no_celery_and_no_other_room() -> None:
    mods = modules()
    for name, path in mods.items():
        if not name.startswith("convatlas.shared"):
            continue
        text = path.read_text()
        assert "import celery" not in text and "from celery" not in text, name
        for dep in imports_of(name, path, set(mods)):
            assert dep.startswith("convatlas.shared") or dep == "convatlas", (name, dep)


def test_engines_reach_tensorflow_only_through_the_backend() -> None:
    """Every engine module outside ``engine/backend`` (patterns, the CAM family, faithfulness
    metrics, the dataset-examples pass…) names neither TensorFlow nor ``tf_env``."""
    engine = REPO / "shared" / "engine"
    checked = [p for p in sorted(engine.rglob("*.py")) if engine / "backend" not in p.parents]
    assert engine / "unit_maxima.py" in checked and engine / "cam_runner.py" in checked
    for path in checked:
        text = path.read_text()
        assert "tensorflow" not in text and "tf_env" not in text, path.relative_to(REPO)


# The only modules that import TensorFlow (always through ``tf_env.import_tf``): the engines'
# backend, the backend selection, model loading (TensorFlow configured before Keras loads
# weights) and the worker's start-up warm-up.
TF_USERS = ("convatlas.shared.tf_env", "convatlas.shared.engine.backend",
            "convatlas.shared.backend_select", "convatlas.shared.models", "convatlas.workers.app")


def _imports_tensorflow(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        if any(n == "tensorflow" or n.startswith("tensorflow.") or n == "convatlas.shared.tf_env"
               for n in names):
            return True
    return False


def test_only_the_backend_models_and_tf_env_import_tensorflow() -> None:
    users = [name for name, path in modules().items() if _imports_tensorflow(path)]
    assert "convatlas.shared.engine.backend.tf_maxima" in users
    outside = [u for u in users if not any(u == p or u.startswith(p + ".") for p in TF_USERS)]
    assert outside == []
    direct = [name for name, path in modules().items()
              if "import tensorflow" in path.read_text() or "from tensorflow" in path.read_text()]
    assert direct == ["convatlas.shared.tf_env"]


def test_images_are_a_leaf() -> None:
    """Decoding and encoding need nothing of the library but ``config`` (the pixel limit), so
    the producer, the workers and the atlas use them without the engine, models or storage."""
    edges = graph()
    bad = [(a, b) for a, deps in edges.items() if a.startswith("convatlas.shared.images")
           for b in deps if not b.startswith("convatlas.shared.images")
           and b != "convatlas.shared.config"]
    assert "convatlas.shared.images.decode" in edges and bad == []


def test_each_kind_has_its_own_planner() -> None:
    """``producer/plans``: one planner per kind; a kind's planner imports no other kind's."""
    kinds = ("grids", "heatmaps", "examples")
    edges = graph()
    for kind in kinds:
        others = {f"convatlas.producer.plans.{k}" for k in kinds if k != kind}
        assert not edges[f"convatlas.producer.plans.{kind}"] & others, kind


def _apps_after(imports: str) -> int:
    import subprocess
    import sys

    code = f"{imports}; from celery._state import _apps; print(len(_apps))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_importing_task_names_builds_no_app() -> None:
    assert _apps_after("from convatlas.shared.jobs import TASK_NAMES; "
                       "import convatlas.workers.config, convatlas.producer.submit") == 0
    assert _apps_after("import convatlas.workers.app") == 1  # the check can fail
