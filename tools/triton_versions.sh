#!/usr/bin/env bash
# The kernels across Triton versions, without a GPU. For each version given: a venv with
# torch $TORCH (default 2.13.0, the CPU build) and that Triton, the kernel tests in its
# interpreter, then the AOT compile of every benchmark launch for sm_90 (H100/H200) and
# sm_87 (Jetson Orin) through its JIT (tools/aot.py; with --sass, so each binary's memory
# instructions are read from its SASS as well as its PTX), the GPU check's kernel tests compiled
# for sm_90 the same way (tools/count_gpu_test_binaries.py: binaries, compile errors, resource
# problems), the launchers' host time with that Triton's launch path
# (bench/bench_launch_overhead.py), and whether kernels/_launch.launch hands the driver what
# that Triton's own path would (tests/kernels/launch_check.py). A Jetson image may carry an
# old Triton; setup.py admits triton>=3.0.
# TORCH=2.11.0 takes a CUDA build from PyPI (GBs; it runs on the CPU), PYTHON another
# interpreter, and PINS replaces the numpy pin below with other requirements: e.g. JetPack
# 6.1's Python 3.10 + torch 2.5 (TORCH=2.5.1 PYTHON=/path/to/python3.10 ... 3.1.0), or the GPU
# machine's image (TORCH=2.11.0 PYTHON=/path/to/python3.12
# PINS="numpy==2.5.2 onnx==1.23.1 onnxruntime==1.30.0" ... 3.6.0; numpy 2.5 breaks that
# Triton's interpreter, so its interpreter tests fail there: the GPU compiles instead).
# Writes $OUT/<tag>.json (the AOT report) and $OUT/<tag>-gpu-tests.json (the GPU tests'
# binaries), with <tag> = triton-<version>[-torch-<TORCH>][-py<X.Y>], and appends a line per
# version to $OUT/versions.txt. Needs PyPI; venvs are kept under $VENVS for a rerun.
#
#   OUT=bench/results/aot bash tools/triton_versions.sh 3.0.0 3.2.0 3.6.0 3.9.0
#   TORCH=2.11.0 OUT=bench/results/aot bash tools/triton_versions.sh 3.6.0
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local}"
VENVS="${VENVS:-/tmp/edgefuse-triton-venvs}"
TORCH="${TORCH:-2.13.0}"
PYTHON="${PYTHON:-python3}"
[ $# -gt 0 ] || { echo "usage: [TORCH=X.Y.Z] [PYTHON=python3.X] bash tools/triton_versions.sh VERSION [VERSION...]" >&2; exit 2; }
pyver() { "$1" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")'; }
py=$(pyver "$PYTHON") || { echo "PYTHON=$PYTHON: not a Python interpreter" >&2; exit 2; }
suffix=""
[ "$TORCH" = 2.13.0 ] || suffix="-torch-$TORCH"
[ "$py" = "$(pyver python3)" ] || suffix="$suffix-py$py"
[ -z "${PINS:-}" ] || suffix="$suffix-pinned"
mkdir -p "$OUT" "$VENVS"
status=0
for v in "$@"; do
  tag="triton-$v$suffix"
  venv="$VENVS/$tag"
  # numpy 2.4 breaks the interpreter of Triton 3.6 and older; numpy 2 that of 3.5 and older
  case "$v" in 3.[0-5].*) pins="numpy<2" ;; *) pins="numpy<2.4" ;; esac
  pins="${PINS:-$pins}"
  if [ ! -x "$venv/bin/python" ]; then
    # one resolve for edgefuse, the Triton and the numpy pin: a later install could lift numpy
    # past the pin (onnxruntime would), and an old interpreter then computes wrong results
    "$PYTHON" -m venv "$venv" && "$venv/bin/pip" install -q --upgrade pip "setuptools>=69" wheel \
      && "$venv/bin/pip" install -q "torch==$TORCH" \
      && "$venv/bin/pip" install -q -e . "triton==$v" $pins pytest pytest-xdist matplotlib \
      || { echo "$tag: install failed" | tee -a "$OUT/versions.txt"; status=1; continue; }
  fi
  tests=$(TRITON_INTERPRET=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 2 tests/kernels \
            --ignore=tests/tools/test_aot.py 2>&1 | tail -n 1)
  case "$tests" in *failed*|*error*) status=1 ;; esac
  # an empty Triton cache each run, so the AOT check compiles (and times) every binary for real
  cache=$(mktemp -d)
  aot=$(env -u TRITON_INTERPRET TRITON_CACHE_DIR="$cache" "$venv/bin/python" -m tools.aot \
          --arch 90 --arch 87 --sass --json "$OUT/$tag.json" 2>&1 | tail -n 1) || status=1
  # (it uses an empty Triton cache of its own)
  gpu_tests=$(env -u TRITON_INTERPRET "$venv/bin/python" tools/count_gpu_test_binaries.py --out "$venv/gpu-tests" 2>&1 \
                | grep '^sm_90:' | sed 's/ {[^}]*}//') || status=1
  cp "$venv/gpu-tests/gpu_test_binaries.json" "$OUT/$tag-gpu-tests.json" 2>/dev/null || status=1
  host=$(env -u TRITON_INTERPRET TRITON_CACHE_DIR="$cache" "$venv/bin/python" bench/bench_launch_overhead.py \
           --out "$venv/overhead" 2>&1 | awk '/^fused_projection/ && !n {print $5, $6 ", through Triton'"'"'s JIT", $7, $8; n = 1}') || status=1
  # kernels/_launch.launch against Triton's own launch path (also among the interpreter tests)
  launch=$(env -u TRITON_INTERPRET TRITON_CACHE_DIR="$cache" "$venv/bin/python" tests/kernels/launch_check.py 2>&1 | head -n 1 \
             | sed 's/^Triton [^:]*: //') || status=1
  rm -rf "$cache"
  versions=$("$venv/bin/python" -c 'import sys, numpy, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__}")')
  echo "triton $v ($versions): interpreter tests: $tests; aot: $aot; GPU check's kernel tests, $gpu_tests;" \
       "fused_projection host time with the launch path: $host; launch check: $launch" | tee -a "$OUT/versions.txt"
done
exit $status
