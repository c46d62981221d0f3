"""The layer contract, read from the code's own imports (every ``import``, at the top of a
module or inside a function, relative ones resolved):

* foundation modules (errors, limits, flags, cache, provenance, telemetry, metrics, console) import
  nothing of iplap but each other (and ``iplap.__version__``);
* the runtime imports only the foundation and itself: no surface, no tool, no command, no
  ``models`` (torch);
* the surfaces (serve, batch, integrations) import only the public API (``import iplap``),
  the foundation and themselves;
* the tools (export, calibration, benchmarks) may use the runtime (the benchmarks measure the
  surfaces too); only export and calibration import ``models`` (the benchmarks' torch
  baseline and the demo's stand-in bundle come through ``iplap.export.reference``);
* no module imports another that imports it back (no circle of files).

docs/architecture.md states the same rules.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "iplap"

FOUNDATION = {"errors", "limits", "flags", "cache", "provenance", "telemetry", "metrics", "console"}
SURFACES = {"serve", "batch", "integrations"}
TOOLS = {"export", "calibration", "benchmarks"}
#: What each part of the package may import (by first name below ``iplap``; "" is ``iplap`` itself).
ALLOWED = {
    **{name: FOUNDATION | {""} for name in FOUNDATION},
    "runtime": FOUNDATION | {"runtime"},
    **{name: FOUNDATION | {"", name} for name in SURFACES},
    "models": FOUNDATION | {"models"},
    "samples": FOUNDATION | {"samples", "runtime"},
    "export": FOUNDATION | {"", "export", "runtime", "models", "samples"},
    "calibration": FOUNDATION | {"", "calibration", "runtime", "models", "samples", "export"},
    # the benchmarks measure the surfaces too (a loopback Ray cluster, the service)
    "benchmarks": FOUNDATION | {"", "benchmarks", "runtime", "samples", "export", "calibration", *SURFACES},
    "demo": FOUNDATION | {"", "runtime", "export", "samples"},
    "cli": FOUNDATION | {""},  # the subcommands' modules are imported by name (COMMAND_MODULES)
    "__main__": {"cli"},
    "": FOUNDATION | {"runtime"},  # the public API: foundation names eagerly, the runtime's lazily
}


def _modules() -> dict[str, Path]:
    """iplap's modules (dotted name -> file), tests, examples and build output left out."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "examples", "build", "docs") or rel.parts[0].startswith("."):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join([PACKAGE, *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The iplap modules that module ``name`` imports (``from x import y`` counts y where it is
    a module of its own, else x)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
            found |= subs or {target}
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _part(module: str) -> str:
    """The part of iplap a module belongs to: its first name below ``iplap`` ("" for iplap)."""
    return module.split(".")[1] if "." in module else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(name, path, modules) if m != name} for name, path in modules.items()}


def test_each_part_imports_only_what_its_layer_allows():
    offenders = []
    for module, imported in sorted(_graph().items()):
        part = _part(module)
        allowed = ALLOWED.get(part)
        assert allowed is not None, f"{module}: a part of iplap the layer rules do not know: add it to ALLOWED"
        offenders += [f"{module} -> {target}" for target in sorted(imported) if _part(target) not in allowed]
    assert offenders == []


def test_surfaces_use_the_public_api_not_the_runtime():
    """Spelled out, since it is the rule users of the surfaces rely on."""
    graph = _graph()
    offenders = [f"{m} -> {t}" for m, targets in graph.items() if _part(m) in SURFACES
                 for t in targets if _part(t) in {"runtime", "models", *TOOLS}]
    assert offenders == []


def test_no_module_is_part_of_an_import_circle():
    graph = _graph()
    circles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    # a package's __init__ that re-exports its own modules, which import their siblings from the
    # package, is not a circle of files: only circles between different files' code count
    real = [c for c in circles if not _only_package_reexports(c, graph)]
    assert real == []


def _only_package_reexports(component: list[str], graph: dict[str, set[str]]) -> bool:
    """Whether every edge that closes the circle runs from a package's ``__init__`` to its own
    modules (a facade), with no module of the circle importing its package's ``__init__``."""
    members = set(component)
    inits = {m for m in members if (ROOT / Path(*m.split(".")[1:]) / "__init__.py").is_file() or m == PACKAGE}
    for module in members - inits:
        if graph[module] & inits:
            return False
    return bool(inits)
