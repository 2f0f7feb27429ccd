"""The training commands as users run them, for the tests: ``mofo pretrain|finetune|evaluate``
in a child process, DeepSpeed on the CPU, without the caller's MOFO_* or rank settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from testkit.server import MOFO


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("MOFO_", "RANK", "WORLD_"))}
    out["DS_ACCELERATOR"] = "cpu"
    return out


def mofo(
    command: str, config: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MOFO, command, "--config", str(config), *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
