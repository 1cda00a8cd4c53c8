#!/usr/bin/env bash
# The README's headline figures from the product's own commands, on this machine: `edgefuse demo` (the
# whole job and its summary table), `edgefuse bench` of its bundle against the INT8-everywhere one (every
# engine beside plain ONNX Runtime and PyTorch eager, cold start, runtime overhead, swaps), and
# `edgefuse compare` over every fusion strategy (about 12 minutes on 2 cores; COMPARE=0 leaves it out).
# Results under $OUT (default bench/results/local/product); bench/results/cpu-2core/{demo,compare}/ are
# these files from the AVX2 development VM.
#
#   bash bench/bench_product.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local/product}"
EF="${EDGEFUSE:-.venv/bin/edgefuse}"
mkdir -p "$OUT"
"$EF" demo --out "$OUT/demo"
"$EF" bench "$OUT/demo/bundle" --against "$OUT/demo/bundle-int8" --checkpoint "$OUT/demo/checkpoint" --out "$OUT/bench" > /dev/null
if [ "${COMPARE:-1}" != 0 ]; then
  "$EF" compare --data sensorscenes --out "$OUT/compare"
fi
echo "wrote $OUT/demo/summary.md and $OUT/bench/bench.md$([ "${COMPARE:-1}" != 0 ] && echo " and $OUT/compare/compare.md")"
