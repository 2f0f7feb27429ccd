"""What the benchmarks share: one thread a process, and how they name the machine they ran on."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def one_thread() -> None:
    """OpenCV and torch on one thread each: figures per core, comparable across machines."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if found:
            return found.group(1).strip()
    return platform.processor() or platform.machine()


def cores_line() -> str:
    """``x86_64, 2 CPUs, one thread``: the machine a one-thread-a-process run used."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, one thread"
