#!/usr/bin/env bash
# One call on a GPU machine that verifies and measures every GPU path (see gpu/README.md), the
# most important figures first, each section under a timeout inside one overall budget:
#   kernel    (not a section; always, ~10 s) the Triton TV-L1 kernels against the CPU path on one
#             small pair; if they fail, the rest runs with MOFO_TVL1_KERNEL=compiled and says so
#   flow      TV-L1: pairs/s at 224² and 320×240, B = 1, 8, 32, 128, epsilon and fixed, for the
#             Triton kernels and the torch.compile step; share of the memory-bandwidth bound;
#             × OpenCV TV-L1 on this machine's cores; EPE vs OpenCV (bench/gpu_flow.py)
#   profile   one TV-L1 call kernel by kernel (torch.profiler): Triton (median by counting and
#             by a selection network) and torch.compile; each kernel's GPU time and share, the
#             inner kernel's own bandwidth (bench/gpu_profile.py)
#   tests     the `gpu` tests (tests/shared, tests/training)
#   pipeline  regions and boxes, ms per batch of 16 and 64 frames, CUDA vs CPU, equal boxes; the
#             whole `mofo boxes` (decode included) on the clips, frames/s (bench/gpu_pipeline.py)
#   api       `mofo serve` under load at concurrency 1 and 16 (bench/api_load.py)
#   pretrain  one ViT-B pretraining step, SDPA + bf16 vs the VideoMAE-style reference
#   smoke     DeepSpeed pretrain (+ resume), finetune, evaluate (gpu/pretrain_smoke.sh)
# $OUT (./gpu-out when unset) gets 4 files: gpu-check.log (everything printed), gpu_figures.json
# (all figures, gpu/report.py; rewritten after every section), nvidia-smi.txt and
# extras.tar.gz (each section's log and JSON, the server's log, the smoke's files).
#
# Needs, beside the repository (git-ignored: copy them to the GPU machine with the checkout):
#   .whl/       gpu-site.tar.xz from `python -m gpu.pack`: the packages the GPU image lacks,
#               installed for Python 3.12 (kornia, PyAV, opencv-contrib, pydantic, FastAPI,
#               uvicorn, DeepSpeed, ...), unpacked into /tmp/site, first on PYTHONPATH (contrib's
#               cv2, with cv2.optflow, wins over the image's); any *.whl there is pip-installed
#               too. Only on Python 3.12 (a dry run elsewhere uses its own environment).
#   .gpu-data/  clips/ (bikes.mp4, carphone_pristine.mp4), also written by gpu/pack.py
#
# Settings (environment):
#   GPU_CHECK_BUDGET  seconds for the whole run (default 450); a section gets at most what is
#                     left, and is skipped when less than its minimum is left
#   SECTIONS          which sections, comma-separated (default all, in the order above)
#   FLOW_ARGS PROFILE_ARGS PIPELINE_ARGS API_ARGS PRETRAIN_ARGS  extra arguments for each bench
#   FLOW_TIMEOUT PROFILE_TIMEOUT PIPELINE_TIMEOUT API_TIMEOUT PRETRAIN_TIMEOUT TESTS_TIMEOUT
#   SMOKE_TIMEOUT     each section's own cap (defaults 250, 70, 100, 110, 75, 200, 240)
#   MOFO_TVL1_KERNEL  the CUDA TV-L1 kernel of the pipeline and API sections (triton, compiled)
#   SMOKE_MIN         run the smoke only if this many seconds are left (default 120)
# Without CUDA (a dry run) the CUDA-only parts say "skipped: no CUDA" and the rest runs small.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-/tmp/gpu-check}
rm -rf "$WORK"
mkdir -p "$WORK/bin" "$WORK/smoke"
exec > >(tee "$OUT/gpu-check.log") 2>&1
TEE_PID=$!
trap 'exec 1>&- 2>&-; wait "$TEE_PID"' EXIT  # the log complete before the call returns
export PYTHONUNBUFFERED=1
BUDGET=${GPU_CHECK_BUDGET:-450}
SECTIONS=${SECTIONS:-flow,profile,tests,pipeline,api,pretrain,smoke}
T0=$SECONDS

left() { echo $((BUDGET - (SECONDS - T0))); }

report() {  # merge what the sections wrote so far; keep their files in extras.tar.gz
  python3 gpu/report.py "$WORK" "$OUT/gpu_figures.json" "$@" \
    || echo "gpu/report.py failed (rc $?)"
  tar -czf "$OUT/extras.tar.gz" -C "$WORK" --exclude=bin . 2>/dev/null || true
}

# section NAME CAP MIN COMMAND...: run COMMAND under `timeout` with the smaller of CAP and the
# budget left, unless the section is not wanted or less than MIN seconds are left; its output
# also goes to $WORK/NAME.log; "{T}" in COMMAND becomes its timeout.
section() {
  local name=$1 cap=$2 min=$3 start=$SECONDS rc=0 note=ok limit
  shift 3
  echo
  echo "== $name ($(left) s of the budget left)"
  if [[ ",$SECTIONS," != *",$name,"* ]]; then
    note="skipped: not in SECTIONS"
  else
    limit=$(left)
    ((limit > cap)) && limit=$cap
    if ((limit < min)); then
      note="skipped: budget (${limit} s left, needs ${min})"
    else
      local args=("${@//\{T\}/$limit}")
      timeout -k 10 "$limit" "${args[@]}" 2>&1 | tee "$WORK/$name.log"
      rc=${PIPESTATUS[0]}
      ((rc == 124 || rc == 137)) && note="timed out after ${limit} s" || {
        ((rc == 0)) && note=ok || note=failed
      }
    fi
  fi
  [[ $note == skipped* ]] && echo "$note"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" $((SECONDS - start)) "$note" >>"$WORK/sections.tsv"
  report
}

# -- setup: packages, versions ----------------------------------------------------------------
start=$SECONDS
export PYTHONPATH="$PWD"
shopt -s nullglob
archives=(.whl/*.tar.xz)
wheels=(.whl/*.whl .whl/*/*.whl)
shopt -u nullglob
if ((${#archives[@]} + ${#wheels[@]})) && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  stamp=$(ls -l "${archives[@]}" "${wheels[@]}" | md5sum | cut -c1-16)
  if [[ "$(cat /tmp/site/.stamp 2>/dev/null)" != "$stamp" ]]; then  # a rerun on a warm machine keeps it
    rm -rf /tmp/site && mkdir -p /tmp/site
    for archive in "${archives[@]}"; do
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
        "$archive" /tmp/site || exit 1
    done
    if ((${#wheels[@]})); then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "${wheels[@]}" || exit 1
    fi
    echo "$stamp" >/tmp/site/.stamp
  fi
  export PYTHONPATH="/tmp/site:$PYTHONPATH" PATH="/tmp/site/bin:$PATH"
elif ((${#archives[@]} + ${#wheels[@]})); then
  echo "not installing .whl/ (cp312): python3 is $(python3 -V 2>&1)"
fi
# The project under its installed names (mofo.shared, ...) where it is not installed: links
# mofo/shared -> ../shared and so on (git-ignored), so the checkout resolves them itself.
if ! python3 -m pip show -q mofo >/dev/null 2>&1; then
  for folder in shared services workers training; do ln -sfn "../$folder" "mofo/$folder"; done
fi
if ! command -v mofo >/dev/null; then  # the project is not installed on the GPU machine
  printf '#!/bin/sh\nexec python3 -c %s "$@"\n' \
    "'import sys; from mofo.cli import app; sys.argv[0] = \"mofo\"; app()'" >"$WORK/bin/mofo"
  chmod +x "$WORK/bin/mofo"
  export PATH="$WORK/bin:$PATH"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/nvidia-smi.txt"
python3 - "$WORK/versions.json" <<'EOF'
import importlib
import json
import subprocess
import sys
import time

packages = {}
for name in ("torch", "cv2", "av", "kornia", "cupy", "timm", "numpy", "deepspeed", "pydantic",
             "fastapi", "uvicorn", "typer", "PIL"):
    try:
        module = importlib.import_module(name)
    except Exception as error:  # report every package, whatever stops one
        packages[name] = f"MISSING ({type(error).__name__}: {error})"
    else:
        packages[name] = str(getattr(module, "__version__", "?"))
        if name == "cv2":
            packages[name] += f" from {module.__file__}, optflow {hasattr(module, 'optflow')}"
    print(f"  {name:10s} {packages[name]}")
try:
    import torch

    cuda = torch.cuda.is_available()
except ImportError:
    cuda = False
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, check=True)
    smi = smi.stdout.strip()
except (OSError, subprocess.CalledProcessError):
    smi = None
versions = {
    "device": torch.cuda.get_device_name() if cuda else "cpu (dry run: no CUDA)",
    "nvidia_smi": smi,
    "date": time.strftime("%Y-%m-%d"),
    "python": sys.version.split()[0],
    "packages": packages,
}
print(f"  device     {versions['device']}")
json.dump(versions, open(sys.argv[1], "w"), indent=1)
EOF
HAVE_CUDA=$(python3 -c 'import torch; print(int(torch.cuda.is_available()))' || echo 0)
printf 'setup\t0\t%s\tok\n' $((SECONDS - start)) >>"$WORK/sections.tsv"
if ((HAVE_CUDA)); then
  api_defaults=(--seconds 20 --short-side 224 --num-frames 4)
else  # a dry run: OpenCV on the CPU, tiny requests
  api_defaults=(--seconds 3 --short-side 64 --num-frames 3 --clips sample)
  export SMOKE_MODEL=${SMOKE_MODEL:-vit_tiny_patch8_tubelet2_32px} SMOKE_BATCH=${SMOKE_BATCH:-4}
fi

# -- the Triton kernels on this GPU, before anything relies on them ----------------------------
if ((HAVE_CUDA)); then
  echo
  echo "== kernel: Triton TV-L1 against the CPU path"
  if timeout -k 5 120 python3 - <<'EOF'
import time

import torch
import torch.nn.functional as F

from mofo.shared.flow.tvl1 import tvl1_flow
from mofo.shared.params import FlowParams

gen = torch.Generator().manual_seed(0)
base = F.avg_pool2d(torch.rand(2, 1, 80, 104, generator=gen) * 255, 3, 1)
i0, i1 = base[..., 4:68, 6:90], base[..., 3:67, 4:88]  # moved by (2, 1)
cpu = tvl1_flow(i0.contiguous(), i1.contiguous(), FlowParams())
start = time.perf_counter()
cuda = tvl1_flow(i0.cuda(), i1.cuda(), FlowParams(), fused=True)
torch.cuda.synchronize()
epe = float((cuda.cpu() - cpu).norm(dim=1).mean())
print(f"  triton+graphs vs CPU: mean EPE {epe:.5f} px (first call {time.perf_counter() - start:.1f} s)")
assert epe < 0.02, epe
EOF
  then
    echo "  ok"
  else
    export MOFO_TVL1_KERNEL=compiled
    echo "  FAILED: the pipeline and API sections run with MOFO_TVL1_KERNEL=compiled"
  fi
  echo "  CUDA TV-L1 kernel of the pipeline: ${MOFO_TVL1_KERNEL:-triton}"
  echo
  echo "== kernel choice: FlowParams.cuda_kernel through optical_flow and the FlowBatcher"
  timeout -k 5 180 python3 - <<'EOF' || echo "  FAILED: the kernel choice"
import dataclasses
import os

import torch
import torch.nn.functional as F

from mofo.shared.batcher import FlowBatcher
from mofo.shared.flow import optical_flow
from mofo.shared.params import MotionParams

assert "TRITON_INTERPRET" not in os.environ, "the interpreter must not be on with CUDA"
gen = torch.Generator().manual_seed(1)
gray = F.avg_pool2d(torch.rand(3, 1, 72, 96, generator=gen) * 255, 3, 1)
params = MotionParams(backend="torch")
cpu = optical_flow(gray[:2], gray[1:], params.flow, "torch")
for kernel in ("triton", "compiled"):
    flow_params = dataclasses.replace(params.flow, cuda_kernel=kernel)
    cuda = optical_flow(gray[:2].cuda(), gray[1:].cuda(), flow_params, "torch").cpu()
    epe = float((cuda - cpu).norm(dim=1).mean())
    print(f"  {kernel:8s} optical_flow vs CPU: mean EPE {epe:.5f} px")
    batcher = FlowBatcher(8, 0.0, cuda_kernel=kernel)
    try:
        batched = batcher.flow(gray.cuda(), [0, 1], [1, 2], params).cpu()
    finally:
        batcher.stop()
    epe = float((batched - cpu).norm(dim=1).mean())
    print(f"  {kernel:8s} FlowBatcher  vs CPU: mean EPE {epe:.5f} px")
    assert epe < 0.05, epe
EOF
fi

# -- sections, most important first -----------------------------------------------------------
# TV-L1's sweep ends 30 s before the section's timeout (its --tail), so its tables print.
section flow "${FLOW_TIMEOUT:-250}" 60 \
  python3 bench/gpu_flow.py --json "$WORK/gpu_flow.json" --budget "{T}" ${FLOW_ARGS:-}
section profile "${PROFILE_TIMEOUT:-70}" 25 \
  python3 bench/gpu_profile.py --json "$WORK/gpu_profile.json" ${PROFILE_ARGS:-}
section tests "${TESTS_TIMEOUT:-200}" 40 \
  python3 -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors \
  --junitxml="$WORK/gpu-tests.xml" tests/shared tests/training
section pipeline "${PIPELINE_TIMEOUT:-100}" 30 \
  python3 bench/gpu_pipeline.py --json "$WORK/gpu_pipeline.json" ${PIPELINE_ARGS:-}
section api "${API_TIMEOUT:-110}" 40 \
  python3 bench/api_load.py "${api_defaults[@]}" --concurrency 1,16 --second-backend none \
  --memory-requests 0 --log-dir "$WORK/api" --json "$WORK/api_load.json" ${API_ARGS:-}
section pretrain "${PRETRAIN_TIMEOUT:-75}" 30 \
  python3 bench/pretrain.py --json "$WORK/pretrain.json" ${PRETRAIN_ARGS:-}
section smoke "${SMOKE_TIMEOUT:-240}" "${SMOKE_MIN:-120}" \
  bash gpu/pretrain_smoke.sh "$WORK/smoke"

echo
report --print
printf '%-10s %4d s\n' total $((SECONDS - T0))
failed=$(awk -F'\t' '$4 == "failed" || $4 ~ /^timed out/ {printf "%s ", $1}' "$WORK/sections.tsv")
if [[ -n $failed ]]; then
  echo "failed: $failed"
  exit 1
fi
