"""The sample clip bundled with the package: a synthetic scene with two movers and a static prop,
for a first run, the examples and the tests."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_clip() -> Path:
    """The bundled sample clip's path."""
    return Path(str(resources.files("mofo.shared") / "data" / "sample.mp4"))
