"""What every training run shares, by concern: :mod:`.processes` (starting and joining the
processes, precision, DeepSpeed's config, a process's ``main``), :mod:`.schedule` (learning
rate, data order, seeds, the number of steps, the data loader), :mod:`.log` (the run log and its
tallies), :mod:`.board` (the log's figures for TensorBoard), :mod:`.checkpoints` (folders, final
weights, resuming) and :mod:`.loop` (the step loop of pretraining and finetuning).

Used by ``mofo pretrain``, ``mofo finetune`` and ``mofo evaluate``.
"""

from mofo.training.runs.board import Board, board_dir
from mofo.training.runs.checkpoints import checkpoint_dirs, final_weights, load_latest
from mofo.training.runs.log import RunLog, Tally, gather_tally
from mofo.training.runs.loop import StepLoop
from mofo.training.runs.processes import (
    ds_config,
    free_port,
    init_processes,
    launch,
    merge_config,
    process_main,
    resolve_precision,
)
from mofo.training.runs.schedule import (
    EpochSampler,
    Plan,
    data_loader,
    learning_rate,
    plan_steps,
    seed_of,
)

__all__ = [
    "Board",
    "EpochSampler",
    "Plan",
    "RunLog",
    "StepLoop",
    "Tally",
    "board_dir",
    "checkpoint_dirs",
    "data_loader",
    "ds_config",
    "final_weights",
    "free_port",
    "gather_tally",
    "init_processes",
    "launch",
    "learning_rate",
    "load_latest",
    "merge_config",
    "plan_steps",
    "process_main",
    "resolve_precision",
    "seed_of",
]
