"""pmsq's modules import each other without a circle.

The graph has an edge ``a -> b`` for every explicit import of pmsq module
``b`` written in module ``a``: at the top level, under ``if TYPE_CHECKING:``
and inside functions alike. A deferred import or a type-only import still
couples two modules; hiding a circle behind one is how the Broker, Queue and
Delivery once came to depend on each other. Importing ``pmsq.a.b`` runs
``pmsq/__init__.py`` and ``pmsq/a/__init__.py`` first, but those implicit
parent imports are not edges: only what a module names is.

Run as a script (``python tests/test_imports.py``) it prints the cycles found.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pmsq"

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``pmsq/worker/thread.py`` -> ``pmsq.worker.thread``; a package is its ``__init__``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(node: ast.AST, here: str, is_package: bool, modules: set[str]) -> Iterator[str]:
    """The pmsq modules one import statement names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in modules:
                yield alias.name
        return
    if not isinstance(node, ast.ImportFrom):
        return
    if node.level:
        base = here.split(".")
        # ``from . import x`` in a package's __init__ is relative to the package itself.
        drop = node.level - 1 if is_package else node.level
        base = base[: len(base) - drop] if drop else base
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    for alias in node.names:
        # ``from pmsq.worker import thread`` names the submodule, not only the package.
        if f"{source}.{alias.name}" in modules:
            yield f"{source}.{alias.name}"
        elif source in modules:
            yield source


def import_graph(root: Path = PACKAGE) -> Graph:
    """Every pmsq module and the pmsq modules it imports (explicitly, anywhere in it)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: Graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {
            target
            for node in ast.walk(tree)
            for target in _imported(node, name, is_package, modules)
            if target != name
        }
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one module (each one is a knot of cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def simple_cycles(graph: Graph, cap: int = 100_000) -> list[list[str]]:
    """Elementary cycles (each once, starting at its smallest module), at most ``cap``."""
    cycles: list[list[str]] = []
    for start in sorted(graph):
        path = [start]
        on_path = {start}
        # Only modules ordered after ``start`` may join, so each cycle is found once.
        iters = [iter(sorted(w for w in graph[start] if w >= start))]
        while iters and len(cycles) < cap:
            nxt = next(iters[-1], None)
            if nxt is None:
                iters.pop()
                on_path.discard(path.pop())
                continue
            if nxt == start:
                cycles.append([*path])
            elif nxt not in on_path:
                path.append(nxt)
                on_path.add(nxt)
                iters.append(iter(sorted(w for w in graph[nxt] if w >= start)))
    return cycles


def _path(graph: Graph, src: str, dst: str) -> list[str] | None:
    """A shortest import chain from ``src`` to ``dst``, for the failure message."""
    prev: dict[str, str | None] = {src: None}
    todo = [src]
    while todo:
        nxt = []
        for v in todo:
            for w in sorted(graph[v]):
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        todo = nxt
        if dst in prev:
            chain = [dst]
            while (p := prev[chain[-1]]) is not None:
                chain.append(p)
            return chain[::-1]
    return None


# -- the checker itself, on small made-up packages ------------------------------------


def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pmsq"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_checker_sees_type_only_and_deferred_imports(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "from pmsq.a import A\n",
            "a.py": "from pmsq.b import B\nclass A: ...\n",
            "b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pmsq.a import A\n"
                "def f():\n    from .c import C\n"
            ),
            "c.py": "import pmsq.b\n",
            "sub/__init__.py": "from . import leaf\n",
            "sub/leaf.py": "from .. import a\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["pmsq.b"] == {"pmsq.a", "pmsq.c"}
    assert graph["pmsq.sub"] == {"pmsq.sub.leaf"}
    assert graph["pmsq.sub.leaf"] == {"pmsq.a"}
    assert strongly_connected(graph) == [["pmsq.a", "pmsq.b", "pmsq.c"]]
    assert sorted(simple_cycles(graph)) == [["pmsq.a", "pmsq.b"], ["pmsq.b", "pmsq.c"]]


def test_checker_passes_an_acyclic_package(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {"__init__.py": "from pmsq.a import A\n", "a.py": "import pmsq.b\n", "b.py": "x = 1\n"},
    )
    graph = import_graph(pkg)
    # The package's own __init__ importing a module is no cycle: parents are not edges.
    assert strongly_connected(graph) == []
    assert simple_cycles(graph) == []


# -- pmsq itself ----------------------------------------------------------------------


@functools.cache
def _pmsq_graph() -> Graph:
    return import_graph()


def test_pmsq_modules_import_each_other_without_a_cycle() -> None:
    graph = _pmsq_graph()
    assert {"pmsq.broker", "pmsq.queue"} <= set(graph)  # the walk found the package
    knots = strongly_connected(graph)
    assert knots == [], "import cycles among pmsq modules:\n" + "\n".join(
        " -> ".join([*c, c[0]]) for c in simple_cycles(graph, cap=20)
    )


#: Who may import the facade: the package entry and the layers above the core
#: that take a ``Broker`` from the user (drivers, tools, the conformance suite).
_BROKER_USERS = (
    "pmsq.worker",
    "pmsq.cli",
    "pmsq.monitor",
    "pmsq.contrib",
    "pmsq.demo",
    "pmsq.testing",
    "pmsq.web",
)
#: The parts the Broker is a facade over: they get a ``Runtime``, never the Broker.
_CORE = (
    "pmsq.queue",
    "pmsq.delivery",
    "pmsq.deadletters",
    "pmsq.tenant",
    "pmsq.runtime",
    "pmsq.wakeups",
    "pmsq.envelopes",
    "pmsq.leases",
    "pmsq.routing",
)


@pytest.mark.parametrize("module", _CORE)
def test_the_broker_parts_do_not_reach_back_to_the_broker(module: str) -> None:
    graph = _pmsq_graph()
    assert module in graph
    chain = _path(graph, module, "pmsq.broker")
    assert chain is None, f"{module} reaches the Broker: {' -> '.join(chain or [])}"


def test_only_the_entry_and_the_outer_layers_import_the_broker() -> None:
    graph = _pmsq_graph()
    importers = sorted(m for m, targets in graph.items() if "pmsq.broker" in targets)
    outside = [
        m
        for m in importers
        if m != "pmsq" and not m.startswith(tuple(f"{u}." for u in _BROKER_USERS))
    ]
    assert outside == [], f"modules inside the core import pmsq.broker: {outside}"


if __name__ == "__main__":
    g = import_graph()
    knots = strongly_connected(g)
    cycles = simple_cycles(g)
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges")
    print(f"{len(knots)} strongly connected knots, {len(cycles)} elementary cycles")
    for k in knots:
        print("  knot:", ", ".join(k))
    for c in cycles[:30]:
        print("  cycle:", " -> ".join([*c, c[0]]))
