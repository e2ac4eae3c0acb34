"""The layering of ARCHITECTURE.md, checked from the source: no import cycles, imports point one way, one session
loader, one place that constructs the per-frame decision.

Every `import` in every waste_edge module counts: the lazy ones inside functions and the type-only ones under
`if TYPE_CHECKING:` too (a cycle through a lazy or a type-only import is still two modules that cannot be
understood or moved apart). The graph is read with `ast`, so nothing is imported and the test takes milliseconds.
"""

from __future__ import annotations

import ast
import graphlib
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "waste_edge"

# ARCHITECTURE.md: cli -> {serve, scale, adapt, bench, export, train, runtime, data}; serve -> runtime; adapt -> runtime;
# scale -> runtime (+ train lazily); bench -> runtime (+ train lazily); export -> train, runtime; train -> data;
# runtime -> data; everything may use `_io` (and the shared `errors`). Transitive: what a layer may import, it
# may also import what that layer may import.
DIRECT = {
    "serve": {"runtime"}, "adapt": {"runtime"}, "scale": {"runtime", "train"}, "bench": {"runtime", "train"},
    "export": {"train", "runtime"}, "train": {"data"}, "runtime": {"data"}, "data": set(), "models": set(),
}
# The package root (__version__), the stdlib-only helpers (_io, the output guard, the option declarations), the error base.
SHARED = {"", "_io", "_outputs", "_options", "errors"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]  # `import a.b.c` where c is an attribute: the module is a.b
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(layer: str) -> set[str]:
    seen, todo = set(), list(DIRECT.get(layer, set()))
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x)
            todo.extend(DIRECT.get(x, set()))
    return seen | SHARED | {layer}


def test_the_graph_reader_sees_real_imports():
    graph = import_graph()
    assert "waste_edge.runtime.backends.base" in graph["waste_edge.runtime.backends.select"]
    assert "waste_edge._io" in graph["waste_edge.runtime.backends.select"]
    assert "waste_edge.runtime.predict" in graph["waste_edge.cli"]  # a lazy import inside a function counts
    assert "waste_edge.runtime.collector" in graph["waste_edge.runtime.camera"]  # so does one under `if TYPE_CHECKING:`


def test_a_cycle_through_a_type_only_import_is_found(tmp_path, monkeypatch):
    """The cycle check on a made-up package: a imports b at run time, b imports a only for type checking."""
    pkg = tmp_path / "waste_edge"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from waste_edge.b import B\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from waste_edge.a import A\nB = 1\n")
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "PACKAGE", pkg)
    monkeypatch.setattr(here, "REPO", tmp_path)
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(import_graph()).prepare()


def test_no_import_cycles():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_imports_point_the_way_design_md_says():
    bad = []
    for src, dsts in import_graph().items():
        for dst in dsts:
            if _layer(src) == "cli" or _layer(dst) in _allowed(_layer(src)):
                continue
            bad.append(f"{src} -> {dst}")
        if any(_layer(d) == "cli" for d in dsts):
            bad.append(f"{src} imports the CLI")
    assert not bad, "imports against ARCHITECTURE.md's directions:\n" + "\n".join(sorted(bad))


def test_one_onnx_runtime_session_loader():
    """Every session is built by backends.onnxrt.load_session: providers, threads and the fp16 guard live there."""
    places = [f"{p.relative_to(REPO)}:{i}" for p in PACKAGE.rglob("*.py")
              for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if re.search(r"InferenceSession\(", line)]
    assert places == [places[0]] and places[0].startswith("waste_edge/runtime/backends/onnxrt.py"), places


def test_one_place_runs_the_per_frame_decision():
    """`Decider` is constructed in one place, the frame loop every camera of every verb runs (runtime/pipeline.py)."""
    places = [f"{p.relative_to(REPO)}:{i}" for p in PACKAGE.rglob("*.py")
              for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if re.search(r"\bDecider\(", line)]
    assert len(places) == 1 and places[0].startswith("waste_edge/runtime/pipeline.py"), places
