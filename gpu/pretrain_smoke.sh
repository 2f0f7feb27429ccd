#!/usr/bin/env bash
# `mofo pretrain` on one GPU under DeepSpeed, as a user runs it: ViT-B/16 (16 x 224², bf16,
# ZeRO-2) on a synthetic dataset with its true boxes in an export file, 12 steps, then the same
# command again with max_steps 20: it must resume at step 12 and finish. Then `mofo finetune`
# from its model.pt (MCA head, bf16, 8 steps, held-out scoring) and `mofo evaluate` (2 x 3
# views, Grad-CAM maps). Called by gpu/check.sh with $OUT as $1; leaves the pretraining's
# log.jsonl and last reconstruction image, the finetuning's log, the evaluation's results.json
# and one saliency map there (5 files).
set -euo pipefail
OUT=${1:-./gpu-out}
WORK=$(mktemp -d)
mkdir -p "$OUT"
# A dry run on a CPU machine: SMOKE_MODEL=vit_tiny_patch8_tubelet2_32px SMOKE_BATCH=4
python3 - "$WORK" "${SMOKE_MODEL:-vit_base_patch16_tubelet2}" "${SMOKE_BATCH:-16}" <<'PY'
import sys
from pathlib import Path

from mofo.shared.cache_files import write_records
from mofo.training.synth import truth_records, write_dataset

work, model, batch = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
print(write_dataset(work / "synth", clips=80, size=64, frames=32, seed=0))
write_records(work / "truth.jsonl.gz", truth_records(work / "synth"))
(work / "smoke.toml").write_text(f"""
[model]
name = "{model}"
[data]
source = "{work}/synth/train.json"
boxes = "{work}/truth.jsonl.gz"
params = "truth"
workers = 6
[optim]
batch_size = {batch}
warmup_epochs = 1
epochs = 100
max_steps = 12
[run]
out = "{work}/run"
precision = "auto"
zero_stage = 2
save_every = 6
log_every = 2
images_every = 20
""")
(work / "finetune.toml").write_text(f"""
[model]
name = "{model}"
pretrained = "{work}/run/model.pt"
[data]
source = "{work}/synth/train.json"
boxes = "{work}/truth.jsonl.gz"
params = "truth"
workers = 6
[augment]
mixup = 0.8
cutmix = 1.0
[optim]
batch_size = {batch}
warmup_epochs = 1
epochs = 100
max_steps = 8
[run]
out = "{work}/finetune"
precision = "auto"
zero_stage = 2
log_every = 2
[evaluate]
source = "{work}/synth/validation.json"
clips = 2
crops = 3
batch_size = {max(1, batch // 4)}
saliency = 2
""")
PY
python3 -m mofo.training.pretrain --config "$WORK/smoke.toml"
python3 -m mofo.training.pretrain --config "$WORK/smoke.toml" --set optim.max_steps=20
python3 - "$WORK/run" <<'PY'
import json
import sys
from pathlib import Path

import torch

run = Path(sys.argv[1])
lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
steps = [line for line in lines if "loss" in line]
resumed = [line for line in lines if line.get("event") == "resume"]
start = lines[0]
print("precision", start["precision"], "world", start["world"], "global batch", start["global_batch"])
for line in steps:
    print(f"step {line['step']:3d} loss {line['loss']:.4f} lr {line['lr']:.2e} "
          f"clips/s {line['clips_per_s']:.1f} missing {line['missing_boxes']}")
assert start["precision"] == ("bf16" if torch.cuda.is_available() else "fp32"), start

assert resumed and resumed[0]["step"] == 12, resumed
assert steps[-1]["step"] == 20 and lines[-1]["event"] == "end"
assert all(line["missing_boxes"] == 0 for line in steps)
print("smoke: ok")
PY
cp "$WORK/run/log.jsonl" "$OUT/pretrain-smoke-log.jsonl"
cp "$(ls "$WORK"/run/reconstructions/*.png | tail -1)" "$OUT/pretrain-smoke-reconstruction.png"

python3 -m mofo.training.finetune --config "$WORK/finetune.toml"
python3 -m mofo.training.evaluate --config "$WORK/finetune.toml"
python3 - "$WORK/finetune" <<'PY'
import json
import sys
from pathlib import Path

import torch

run = Path(sys.argv[1])
lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
start, held = lines[0], [line for line in lines if line.get("event") == "held_out"]
print("finetune precision", start["precision"], "steps", start["steps"], "held out", held[-1])
assert start["precision"] == ("bf16" if torch.cuda.is_available() else "fp32"), start
assert held and lines[-1]["event"] == "end" and (run / "best.pt").exists()
results = json.loads((run / "eval" / "results.json").read_text())
print("evaluate", results["views"], "scored", results["scored"], "of", results["clips"])
assert results["scored"] == results["clips"] == 16 and not results["failed"]
assert len(json.loads((run / "eval" / "saliency.json").read_text())) == 2
print("finetune smoke: ok")
PY
cp "$WORK/finetune/log.jsonl" "$OUT/finetune-smoke-log.jsonl"
cp "$WORK/finetune/eval/results.json" "$OUT/evaluate-smoke-results.json"
cp "$(ls "$WORK"/finetune/eval/saliency/*.png | head -1)" "$OUT/evaluate-smoke-saliency.png"
