"""The processes of a training run: started here by torch's launcher (``--nproc``) or by
torchrun/deepspeed, joined into one process group, each stopping with the launcher; the
precision and DeepSpeed's config; one process's ``main``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """On Linux, end this process when its launcher dies, even by SIGKILL: torch's launcher
    starts each rank in its own session, so a killed launcher would leave ranks training on."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def init_processes() -> tuple[int, int, int]:
    """Start (or join) the process group: (rank, world size, local rank). A process started
    on its own becomes a group of one; on a machine without CUDA, DeepSpeed runs on the CPU."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "TORCHELASTIC_RUN_ID" in os.environ:
        _die_with_parent()
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    import deepspeed

    deepspeed.init_distributed(verbose=False)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), local


def merge_config(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = (
            merge_config(merged[k], v)
            if isinstance(v, dict) and isinstance(merged.get(k), dict)
            else v
        )
    return merged


def ds_config(
    batch_size: int,
    grad_accum: int,
    zero_stage: int,
    precision: str,
    clip_grad: float | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """DeepSpeed's config for a run: micro-batch and accumulation, ZeRO stage, bf16 or fp16,
    gradient clipping, then the config file's ``[deepspeed]`` table on top."""
    out: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,  # torch's AdamW, so CPU and GPU run the same one
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if clip_grad is not None:
        out["gradient_clipping"] = clip_grad
    return merge_config(out, extra)


def resolve_precision(precision: str) -> tuple[str, torch.dtype]:
    """``auto`` → bf16 on GPU, fp32 on CPU; the name and the input dtype."""
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "fp32"
    return precision, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def launch(module: str, config_path: Path, overrides: list[str], nproc: int, resume: bool) -> int:
    """``nproc`` processes on this machine through torch's launcher, each running ``module``."""
    import subprocess

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        "--config",
        str(config_path),
    ]
    for item in overrides:
        command += ["--set", item]
    if not resume:
        command.append("--no-resume")
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    with subprocess.Popen(command, env=env) as process:
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            return process.wait()


def process_main(prog: str, load_config, job, argv: list[str] | None = None) -> int:
    """One process of a run: ``python -m MODULE --config FILE [--set k=v]... [--no-resume]``
    (what torch's launcher starts); exit 2 for a bad config, 3 when the box cache is
    unreachable, 1 for another failure."""
    import argparse

    from mofo.shared.cache import CacheUnavailable
    from mofo.shared.errors import MofoError
    from mofo.training.config import ConfigError

    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-resume", dest="resume", action="store_false")
    args = parser.parse_args(argv)
    try:
        job(load_config(args.config, args.overrides), resume=args.resume)
    except MofoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 3 if isinstance(e, CacheUnavailable) else 1
    finally:
        with contextlib.suppress(Exception):
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    return 0
