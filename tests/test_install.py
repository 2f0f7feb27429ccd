"""One installed namespace: the checkout's folders (``shared/``, ``services/``, ``workers/``,
``training/``) install as ``mofo.shared``, ``mofo.services``, ``mofo.workers`` and
``mofo.training`` beside the front door ``mofo``; nothing with a generic name reaches
site-packages, and no module is importable under a second name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
FOLDERS = ("shared", "services", "workers", "training")


def _packages_on_disk() -> set[str]:
    """Installed names of every folder with an ``__init__.py`` under the mapped folders."""
    names = set()
    for installed, folder in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            names.add(".".join((installed, *parts)))
    return names


def test_every_package_folder_is_installed_under_mofo() -> None:
    assert SETUPTOOLS["package-dir"] == {"mofo": "mofo", **{f"mofo.{f}": f for f in FOLDERS}}
    data = {"mofo.shared.data", "mofo.services.motion_api.static"}  # folders of data files only
    assert set(SETUPTOOLS["packages"]) == _packages_on_disk() | data  # no subfolder forgotten
    assert SETUPTOOLS["package-data"] == {
        "mofo.shared.data": ["*.mp4"],
        "mofo.services.motion_api.static": ["*"],
    }
    assert all(name == "mofo" or name.startswith("mofo.") for name in SETUPTOOLS["packages"])


@pytest.mark.parametrize("folder", FOLDERS)
def test_a_folder_refuses_its_bare_name(folder: str) -> None:
    """From the checkout's root (on sys.path as '' for ``python -c``) the bare name would load a
    second copy of every module; its ``__init__`` stops that with a message saying what to do."""
    run = subprocess.run(
        [sys.executable, "-c", f"import {folder}"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 1
    assert f"ImportError: import mofo.{folder}, not {folder} (install the project" in run.stderr
    ok = subprocess.run(
        [sys.executable, "-c", f"import mofo.{folder} as m; print(m.__name__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"mofo.{folder}"


@pytest.mark.slow
def test_the_wheel_holds_only_mofo_and_works_on_its_own(tmp_path: Path) -> None:
    """The built wheel (what ``pip install .`` and the images install) has one top-level name,
    carries its data (the sample clip, the page), and boxes the sample from its own files."""
    wheel_cmd = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w"]
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    caches = shutil.ignore_patterns("__pycache__")
    for folder in ("mofo", *FOLDERS):
        shutil.copytree(ROOT / folder, source / folder, ignore=caches)
    build = subprocess.run(
        [sys.executable, "-m", *wheel_cmd, str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("mofo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {
        "mofo"
    }
    carried = ("shared/data/sample.mp4", "services/motion_api/static/index.html", "cli.py")
    for path in (f"mofo/{name}" for name in carried):
        assert path in names, path
    assert not any("/tests/" in n or n.startswith(("bench/", "tests/")) for n in names)

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import mofo, mofo.shared.pipeline as p; "
        "print(p.__file__); print(mofo.boxes(mofo.sample(), quality='fast').clip_box)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # not the checkout: its folders must not be what is imported
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert run.returncode == 0, run.stderr
    where, box = run.stdout.splitlines()
    assert Path(where).is_relative_to(site)
    x1, y1, x2, y2 = (int(v) for v in box.strip("[]").split(","))
    assert 0 <= x1 < x2 and 0 <= y1 < y2  # a real box of the sample's movers
