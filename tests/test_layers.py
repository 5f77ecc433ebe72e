"""The package's import graph: no circles, and no import from a higher layer into a lower one.

Data flows one way (docs/design.md, "Layout"): base -> data -> model -> run -> training ->
outputs -> workflow -> cli -> api. A module may import its own layer and the layers below it.
Every import counts, including those inside functions: a lazy import is still a dependency, and
lazy imports were how the old circles were hidden.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gimcli"

# Lowest first; a module belongs to the layer of its longest matching prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("gimcli._version", "gimcli._keys", "gimcli.errors", "gimcli.config")),
    ("base", ("gimcli.combinations",)),
    ("base", ("gimcli.provenance",)),
    ("data", ("gimcli.data", "gimcli.simulation")),
    ("model", ("gimcli.model",)),
    ("run", ("gimcli.schema", "gimcli.gimrun")),
    ("training", ("gimcli.training",)),
    ("outputs", ("gimcli.sparsity", "gimcli.prediction", "gimcli.explanation")),
    ("outputs", ("gimcli.evaluation", "gimcli.report")),
    ("workflow", ("gimcli.workflow", "gimcli.api")),
    ("cli", ("gimcli.cli", "gimcli.__main__")),
    ("api", ("gimcli",)),  # the package itself: nothing inside may import it
)
RANK = {name: i for i, name in enumerate(dict.fromkeys(n for n, _ in LAYERS))}


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def layer(module: str) -> str:
    best, name = -1, None
    for lname, prefixes in LAYERS:
        for pre in prefixes:
            if (module == pre or module.startswith(pre + ".")) and len(pre) > best:
                best, name = len(pre), lname
    assert name is not None, f"{module} is in no layer: add it to LAYERS"
    return name


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The gimcli modules `module` imports anywhere in its file (functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "gimcli"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base.split(".")[0] != "gimcli":
                continue
            for a in node.names:  # `from P import m` imports the module P.m when there is one
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m != module}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {i for i in imports(m, p, known) if i in known} for m, p in mods.items()}


def test_every_module_has_a_layer():
    for m in modules():
        layer(m)


def test_no_import_from_a_higher_layer():
    bad = [
        f"{m} ({layer(m)}) imports {i} ({layer(i)})"
        for m, deps in graph().items()
        for i in sorted(deps)
        if RANK[layer(i)] > RANK[layer(m)]
    ]
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_import_circles():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
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
                circles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_only_the_cli_imports_typer():
    users = []
    for m, p in modules().items():
        if layer(m) == "cli":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("typer", "rich") for n in names):
                users.append(m)
    assert not users, f"library modules importing typer/rich: {sorted(set(users))}"


def test_the_checker_sees_lazy_imports_and_back_edges(tmp_path):
    """The checks above would catch a lazy back-edge (a function-level import)."""
    src = "def f():\n    from gimcli.cli import main\n    from gimcli.data import io\n"
    p = tmp_path / "x.py"
    p.write_text(src)
    found = imports("gimcli.data.x", p, {"gimcli.cli", "gimcli.data", "gimcli.data.io"})
    assert found == {"gimcli.cli", "gimcli.data.io"}
    assert RANK[layer("gimcli.cli")] > RANK[layer("gimcli.data.x")]
