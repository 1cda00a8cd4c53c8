#!/usr/bin/env bash
# One prepared GPU check (< 5 minutes on an H200): the kernel tests COMPILED on the GPU (not
# interpreted), then the kernel benchmarks. Everything lands under $OUT (default
# bench/results/local); commit it under bench/results/<gpu>-<date>/ afterwards.
#
#   OUT=/tmp/gpu bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET EDGEFUSE_KERNELS
PY="${PYTHON:-python3}"

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } \
  > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# the image's torch/triton stay; install edgefuse itself offline (no dependencies pulled)
if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1; then
  echo "editable install failed (see install.log); using a copied tree on PYTHONPATH"
  SHIM=$(mktemp -d); cp -r edgefuse "$SHIM/"
  for d in kernels engines calibration; do cp -r "$d" "$SHIM/edgefuse/$d"; done
  export PYTHONPATH="$SHIM:${PYTHONPATH:-}"
fi

status=0
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/kernels "tests/engines/test_engines.py::test_torch_engine_cuda_graph_replay_matches_eager" \
  --junitxml="$OUT/kernel_tests.xml" 2>&1 | tee "$OUT/kernel_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

timeout 170 "$PY" bench/bench_kernels.py --out "$OUT" 2>&1 | tee "$OUT/bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
