"""The package's import graph: arrows point one way (layers <- models <- train <- inference <-
cli; data, motion, metrics and viz import no model code) and no module-level import circle."""

from __future__ import annotations

import ast
from pathlib import Path

import convcast

ROOT = Path(convcast.__file__).parent
ORDER = ["layers", "models", "train", "inference", "cli"]  # each may import those before it
BESIDE = ["data", "motion", "metrics", "viz"]  # import none of ORDER


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """convcast modules imported when `path` is imported (not inside functions or
    TYPE_CHECKING blocks)."""
    tree, out = ast.parse(path.read_text()), set()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1],
                                     *([node.module] if node.module else [])])
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)

    visit(tree.body)
    return {m for m in out if m.startswith("convcast")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {m: {i for i in top_level_imports(p) if i in modules and i != m}
            for m, p in modules.items()}


def test_arrows_point_one_way() -> None:
    bad = []
    for m, deps in graph().items():
        area = m.split(".")[1] if m.count(".") else ""
        if area in ORDER:
            allowed = set(ORDER[:ORDER.index(area) + 1])
        elif area in BESIDE:
            allowed = set()
        else:
            continue
        for d in deps:
            other = d.split(".")[1] if d.count(".") else ""
            if other in ORDER and other not in allowed:
                bad.append(f"{m} imports {d}")
    assert not bad, bad


def test_no_module_level_import_circle() -> None:
    g, index, low, stack, on, cycles = graph(), {}, {}, [], set(), []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                strong(w)
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
            # a package and the modules its __init__ re-exports form no circle unless a
            # module imports its own package's __init__ back
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            strong(v)
    assert not cycles, cycles
