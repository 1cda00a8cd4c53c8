#!/usr/bin/env bash
# The kernels across Triton versions, without a GPU. For each version given: a venv with
# torch==2.13.0 (CPU) and that Triton, the kernel tests in its interpreter, then the AOT
# compile of every benchmark launch for sm_90 (H100/H200) and sm_87 (Jetson Orin) through its
# JIT (kernels/aot.py), and the launchers' host time with that Triton's launch path
# (bench/bench_launch_overhead.py). A Jetson image may carry an old Triton; setup.py admits
# triton>=3.0.
# Writes $OUT/triton-<version>.json (the AOT report) and appends a line per version to
# $OUT/versions.txt. Needs PyPI; venvs are kept under $VENVS for a rerun.
#
#   OUT=bench/results/aot bash bench/triton_versions.sh 3.0.0 3.2.0 3.6.0 3.9.0
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local}"
VENVS="${VENVS:-/tmp/edgefuse-triton-venvs}"
[ $# -gt 0 ] || { echo "usage: bash bench/triton_versions.sh VERSION [VERSION...]" >&2; exit 2; }
mkdir -p "$OUT" "$VENVS"
status=0
for v in "$@"; do
  venv="$VENVS/triton-$v"
  # numpy 2.4 breaks the interpreter of Triton 3.6 and older; numpy 2 that of 3.5 and older
  case "$v" in 3.[0-5].*) numpy="numpy<2" ;; *) numpy="numpy<2.4" ;; esac
  if [ ! -x "$venv/bin/python" ]; then
    # one resolve for edgefuse, the Triton and the numpy pin: a later install could lift numpy
    # past the pin (onnxruntime would), and an old interpreter then computes wrong results
    python3 -m venv "$venv" && "$venv/bin/pip" install -q torch==2.13.0 \
      && "$venv/bin/pip" install -q -e . "triton==$v" "$numpy" pytest pytest-xdist matplotlib \
      || { echo "$v: install failed" | tee -a "$OUT/versions.txt"; status=1; continue; }
  fi
  tests=$(TRITON_INTERPRET=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 2 tests/kernels \
            --ignore=tests/kernels/test_aot.py 2>&1 | tail -n 1)
  case "$tests" in *failed*|*error*) status=1 ;; esac
  # an empty Triton cache each run, so the AOT check compiles (and times) every binary for real
  cache=$(mktemp -d)
  aot=$(env -u TRITON_INTERPRET TRITON_CACHE_DIR="$cache" "$venv/bin/python" -m edgefuse.kernels.aot \
          --arch 90 --arch 87 --json "$OUT/triton-$v.json" 2>&1 | tail -n 1) || status=1
  host=$(env -u TRITON_INTERPRET TRITON_CACHE_DIR="$cache" "$venv/bin/python" bench/bench_launch_overhead.py \
           --out "$venv/overhead" 2>&1 | awk '/^fused_projection/ && !n {print $5, $6; n = 1}') || status=1
  rm -rf "$cache"
  echo "triton $v: interpreter tests: $tests; aot: $aot; fused_projection host time with Triton's launch path: $host" \
    | tee -a "$OUT/versions.txt"
done
exit $status
