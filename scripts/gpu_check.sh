#!/usr/bin/env bash
# One call on a GPU machine (see ../shared/GPU.md): the gpu-marked tests, then the GPU benchmark.
# Logs and one JSON of figures go to $OUT (./gpu-out when unset). Needs, beside the repo:
#   .whl/       wheels the GPU image lacks (kornia, kornia-rs, opencv-contrib-python-headless)
#   .gpu-data/  frames.npz written by `python bench/realframes.py .gpu-data/frames.npz`
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, cv2, kornia; print('torch', torch.__version__, 'cv2', cv2.__version__, 'kornia', kornia.__version__, 'optflow', hasattr(cv2, 'optflow'))"

echo "== gpu tests"
timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors \
  --ignore=tests/shared/test_decode.py --ignore=tests/shared/test_render.py \
  --ignore=tests/shared/test_cli.py \
  --ignore=tests/services/test_api.py --ignore=tests/services/test_api_redis.py \
  --ignore=tests/services/test_api_load_limits.py --ignore=tests/services/test_schema.py \
  --ignore=tests/services/test_page.py --ignore=tests/shared/test_cache.py \
  --ignore=tests/shared/test_settings.py --ignore=tests/shared/test_decode_segment.py \
  tests/shared 2>&1 | tee "$OUT/gpu-tests.log"

echo "== gpu benchmark"
timeout "${BENCH_TIMEOUT:-300}" python3 bench/gpu_flow.py --frames .gpu-data/frames.npz \
  --json "$OUT/gpu_figures.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu-bench.log"
