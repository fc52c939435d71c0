"""The packages' import graph: no cycles, no private name imported across modules, and the
layering (simulators and encoders never import dasbi; the model core never imports
simulators)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dasbi", "simulators", "encoders")
#: the model core: network, noise processes, loss, masks, samplers, trainers, posteriors
#: (what it needs of a band, zero point and pivot wavelength, comes in the node metadata)
CORE = {
    "dasbi.network",
    "dasbi.sde",
    "dasbi.loss",
    "dasbi.masks",
    "dasbi.samplers",
    "dasbi.trainer",
    "dasbi.train",
    "dasbi.adapt",
    "dasbi.adapted",
    "dasbi.posterior",
    "dasbi.inputs",
    "dasbi.transforms",
    "dasbi.nodes",
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(mods: dict[str, Path]) -> dict[str, list[tuple[str, list[str]]]]:
    """module → [(imported module, names)] for every import statement, lazy ones included."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        found = []
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                names = [a.name for a in node.names]
                # `from pkg import module` imports the submodule
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in mods]
                found.append((target, [n for n in names if f"{target}.{n}" not in mods]))
                found += [(s, []) for s in subs]
            elif isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names]
        out[name] = [(t, n) for t, n in found if t.split(".")[0] in PACKAGES]
    return out


def test_no_private_name_crosses_a_module_boundary():
    mods = _modules()
    bad = [
        f"{m} imports {n} from {t}"
        for m, imps in _imports(mods).items()
        for t, names in imps
        for n in names
        if n.startswith("_") and not n.startswith("__") and t != m
    ]
    assert not bad, "\n".join(bad)


def test_import_graph_has_no_cycles():
    mods = _modules()
    graph = {
        m: {t for t, _ in imps if t in mods and t != m and not m.startswith(t + ".")}
        for m, imps in _imports(mods).items()
    }
    # a package's __init__ importing its submodules is not a cycle with them
    for m in graph:
        graph[m] = {t for t in graph[m] if not (t in PACKAGES and m.startswith(t + "."))}
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if seen.get(t) == 1:
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_layers():
    mods = _modules()
    bad = []
    for m, imps in _imports(mods).items():
        for t, _ in imps:
            top = t.split(".")[0]
            if m.split(".")[0] in ("simulators", "encoders") and top == "dasbi":
                bad.append(f"{m} imports {t}")
            if m in CORE and top == "simulators":
                bad.append(f"core module {m} imports {t}")
    assert not bad, "\n".join(bad)
