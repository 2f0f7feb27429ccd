"""The layers: the core (``mofo.shared``) imports nothing above it; the service, the workers and
the training jobs (``mofo.services``, ``mofo.workers``, ``mofo.training``) import the core and
never each other; ``mofo`` itself (the front door and the command line) composes them all; and no
module imports itself back through others. Modules go by their installed names: the folders
``shared/``, ``services/``, ``workers/`` and ``training/`` are installed under ``mofo``.

Every import counts, at module level or inside a function (where most of the old upward edges
hid). The checks run on the real tree and on planted trees, to show that they fail.
"""

from __future__ import annotations

import ast
import shutil
from collections import defaultdict
from pathlib import Path

from testkit.trees import write_tree

ROOT = Path(__file__).resolve().parents[1]

# A layer may import its own modules and those of layers of a lower rank only. Each layer is a
# folder of the checkout, installed as mofo.<folder>; the mofo folder is the namespace itself.
RANKS = {"shared": 0, "services": 1, "workers": 1, "training": 1, "mofo": 2}
INSTALLED = {folder: "mofo" if folder == "mofo" else f"mofo.{folder}" for folder in RANKS}

Edge = tuple[str, str, int]  # importer, imported module, line


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for folder, installed in INSTALLED.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            out[".".join((installed, *(parts[:-1] if parts[-1] == "__init__" else parts)))] = path
    return out


def layer(module: str) -> str:
    """The layer of an installed module name: ``mofo.shared.flow`` → ``shared``, ``mofo.cli`` →
    ``mofo``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS and parts[1] != "mofo" else "mofo"


def import_edges(root: Path) -> list[Edge]:
    """Every import between the layers' modules under ``root``: (importer, module, line), each
    imported name taken to the longest module it names (``from mofo.shared import cache`` is
    ``mofo.shared.cache``); imports of outside packages are left out."""
    modules = _modules(root)

    def known(name: str) -> str | None:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    edges = set()
    for importer, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = known(name)
                # a module's own package (its __init__) runs first anyway: not an edge, unless
                # it is the layer above (``from mofo import boxes`` in the core goes up)
                if target is None or target == importer:
                    continue
                own = importer.startswith(target + ".") and layer(target) == layer(importer)
                if not own:
                    edges.add((importer, target, node.lineno))
    return sorted(edges)


def layer_violations(edges: list[Edge]) -> list[str]:
    """The edges that go up a layer, or sideways between packages of one rank."""
    bad = []
    for importer, target, line in edges:
        a, b = layer(importer), layer(target)
        if a != b and RANKS[b] >= RANKS[a]:
            kind = "sideways" if RANKS[a] == RANKS[b] else "upward"
            bad.append(f"{importer}:{line} imports {target} ({kind})")
    return bad


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """The modules that import themselves back through others (strongly connected components
    of more than one module), each sorted."""
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, target, _ in edges:
        graph[importer].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if node not in index:
            visit(node)
    return sorted(cycles)


# --------------------------------------------------------------------------- the real tree


def test_the_layers_import_only_downwards() -> None:
    edges = import_edges(ROOT)
    assert len(edges) > 100  # the walk sees the tree (the layers import the core a lot)
    assert layer_violations(edges) == []


def test_no_module_imports_itself_back() -> None:
    assert import_cycles(import_edges(ROOT)) == []


def test_the_front_door_and_the_command_line_sit_on_top() -> None:
    """``mofo`` is the composition root: it reaches every layer, and nothing reaches it."""
    edges = import_edges(ROOT)
    reached = {layer(t) for i, t, _ in edges if layer(i) == "mofo"}
    assert reached == {"mofo", "shared", "services", "workers", "training"}
    assert [e for e in edges if layer(e[1]) == "mofo" and layer(e[0]) != "mofo"] == []


def test_the_training_entry_points_share_code_through_modules_only() -> None:
    """pretrain, finetune and evaluate are leaves: they import the modules they share (the data
    table, the finetuning config, the run machinery), never one another; the command line
    starts them by name."""
    entries = {f"mofo.training.{name}" for name in ("pretrain", "finetune", "evaluate")}
    edges = import_edges(ROOT)
    assert [e for e in edges if e[1] in entries] == []
    shared = {t for i, t, _ in edges if i in entries}
    assert {"mofo.training.data", "mofo.training.finetune_config", "mofo.training.runs"} <= shared


# --------------------------------------------------------------------------- planted imports


def test_planted_upward_sideways_and_cyclic_imports_are_found(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "shared/__init__.py": "",
            "shared/a.py": "def f():\n    from mofo.services.x import y  # hidden in a function\n",
            "shared/p.py": "import mofo.shared.q\n",
            "shared/q.py": "from mofo.shared import p\n",
            "shared/r.py": "from mofo import boxes  # the front door, from below\n",
            "services/__init__.py": "",
            "services/x.py": "import json\nfrom mofo.shared.a import f\ny = 1\n",
            "workers/__init__.py": "",
            "workers/b.py": "import mofo.training.c\n",
            "training/__init__.py": "",
            "training/c.py": "from mofo import cli\n",
            "mofo/__init__.py": "",
            "mofo/cli.py": "import mofo.shared.a, mofo.workers.b\n",
        },
    )
    edges = import_edges(tmp_path)
    assert layer_violations(edges) == [
        "mofo.shared.a:2 imports mofo.services.x (upward)",
        "mofo.shared.r:1 imports mofo (upward)",
        "mofo.training.c:1 imports mofo.cli (upward)",
        "mofo.workers.b:1 imports mofo.training.c (sideways)",
    ]
    assert import_cycles(edges) == [
        ["mofo.cli", "mofo.training.c", "mofo.workers.b"],
        ["mofo.services.x", "mofo.shared.a"],
        ["mofo.shared.p", "mofo.shared.q"],
    ]


def test_one_upward_import_planted_in_the_real_core_is_found(tmp_path: Path) -> None:
    for package in RANKS:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    record = tmp_path / "shared" / "record.py"
    record.write_text(record.read_text() + "\n\ndef _late():\n    import mofo.workers.worker\n")
    violations = layer_violations(import_edges(tmp_path))
    assert len(violations) == 1
    assert violations[0].startswith("mofo.shared.record:") and violations[0].endswith(
        "imports mofo.workers.worker (upward)"
    )
    assert import_cycles(import_edges(tmp_path)) != []  # the worker imports the record
