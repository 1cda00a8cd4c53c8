#!/usr/bin/env bash
# Engine latency on THIS machine's CPU from nothing: trains the demo model unless a checkpoint
# is given, builds the INT8 and FP32 bundles, runs bench/bench_engines.py (batch 1/8/32, one
# thread). Meant for CPUs this project's dev VMs lack (AVX-512 VNNI/AMX, ARM dot product), e.g.
# the GPU machine's host, where ONNX Runtime's INT8 kernels can beat FP32. Then the INT8/FP32
# sweep over model size (bench/bench_int8_scaling.py). About 5 minutes on 2 cores.
#
#   OUT=/tmp/cpu bash bench/engines_check.sh [CHECKPOINT]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local}"
mkdir -p "$OUT"
source bench/_env.sh

{ lscpu | grep -E "Model name|^CPU\(s\)"; grep -o -w -E "avx512_vnni|avx_vnni|amx_int8|avx512f|avx2|asimddp" /proc/cpuinfo | sort -u | tr '\n' ' '; echo; } > "$OUT/cpu.txt" 2>&1
cat "$OUT/cpu.txt"
CK="${1:-/tmp/edgefuse-engines-check/checkpoint}"
if [ ! -f "$CK/config.json" ]; then
  timeout 240 "$PY" -m edgefuse train --data sensorscenes --fusion gated --out "$CK" || exit 1
fi
# BENCH_ARGS passes extra flags (e.g. "--iters 200 --batches 1" for a quick look)
status=0
timeout 300 "$PY" bench/bench_engines.py --checkpoint "$CK" --out "$OUT" --work /tmp/edgefuse-engines-check/bundles ${BENCH_ARGS:-} || status=1
# where INT8 starts to pay on this CPU (model size sweep, untrained models, about 2 minutes here)
timeout 240 "$PY" bench/bench_int8_scaling.py --out "$OUT" || status=1
exit $status
