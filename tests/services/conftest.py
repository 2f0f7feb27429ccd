"""Servers for the API tests: real ``mofo serve`` processes, one per configuration and module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from testkit.server import Server


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory, bikes: Path, carphone: Path) -> Path:
    """A data root with real clips in a subfolder, a secret beside it, and a link leading out."""
    import shutil

    from mofo.shared.sample import sample_clip
    from testkit.badclips import truncated_mp4

    base = tmp_path_factory.mktemp("data")
    root = base / "root"
    (root / "clips").mkdir(parents=True)
    shutil.copy(sample_clip(), root / "clips" / "sample.mp4")
    shutil.copy(bikes, root / "clips" / "bikes.mp4")
    shutil.copy(carphone, root / "clips" / "carphone.mp4")
    truncated_mp4(root / "clips")  # clips/truncated_40_faststart.mp4: breaks mid-stream
    (base / "secret.mp4").write_bytes(sample_clip().read_bytes())
    (root / "clips" / "escape.mp4").symlink_to(base / "secret.mp4")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Iterator[Server]:
    """The embedded default (no Redis), with a data root and small limits to test them."""
    from testkit.server import start_server  # httpx: not on the GPU machine

    srv = start_server(
        tmp_path_factory.mktemp("logs"),
        data_root=data_root,
        max_upload_bytes=2_000_000,
        max_duration_s=30,
        max_frames=400,
        max_width=1920,
        max_height=1080,
    )
    yield srv
    srv.stop()
