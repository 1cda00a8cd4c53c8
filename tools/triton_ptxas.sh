#!/usr/bin/env bash
# Which CUDA toolkits' ptxas each Triton release builds the kernels with, without a GPU.
# Triton builds with the ptxas in its wheel (CUDA 12.4 to 12.9; 13.x for Blackwell, and for
# Hopper from 3.9), and a driver older than that ptxas may refuse what it builds. Dispatch
# then takes the reference ops, with a warning that says to point the variable Triton reads
# (ops.triton_ptxas: TRITON_PTXAS_PATH, or TRITON_PTXAS_BLACKWELL_PATH) at an older toolkit's
# ptxas, such as JetPack's. This checks that advice: for each venv that tools/triton_versions.sh
# made and each architecture in $ARCHS (default: 87, Jetson Orin; 90, H100/H200), the AOT
# compile of every benchmark launch (tools/_aot.sh) with the ptxas of each CUDA toolkit in
# $CUDAS (default 11.8 12.2 12.6: JetPack 5 has 11.4, JetPack 6.0 12.2, 6.1 and 6.2 12.6),
# from PyPI's nvidia-cuda-nvcc wheels (kept under $PTXAS_DIR), named by the variable
# ops.triton_ptxas names. A wrapper counts the calls that reached that ptxas, so a variable
# Triton ignores cannot pass for one it reads. The AOT check reads each binary with cuobjdump,
# and CUDA 13's cannot read what a CUDA 12.2 ptxas builds for sm_90a, so for toolkits before 13
# it reads them with a CUDA 12 one ($CUOBJDUMP12, default: the newest venv's cuobjdump of
# CUDA 12.x; PyPI has no CUDA 12 cuobjdump wheel), named by TRITON_CUOBJDUMP_PATH. Appends to
# $OUT/ptxas.txt one line per venv with its own ptxas for sm_87, sm_90 and sm_100 (all that
# CUDAS="" asks for), then one per architecture and toolkit; exits 1 when a named ptxas was not
# the one used.
#
#   OUT=bench/results/aot bash tools/triton_ptxas.sh triton-3.0.0 triton-3.8.0 triton-3.9.0
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local}"
VENVS="${VENVS:-/tmp/edgefuse-triton-venvs}"
ARCHS="${ARCHS:-87 90}"
CUDAS="${CUDAS-11.8 12.2 12.6}"  # (set but empty: none)
PTXAS_DIR="${PTXAS_DIR:-/tmp/edgefuse-ptxas}"
PY="${PYTHON:-python3}"
[ $# -gt 0 ] || { echo "usage: bash tools/triton_ptxas.sh VENV_TAG... (venvs under $VENVS, made by triton_versions.sh)" >&2; exit 2; }
source tools/_aot.sh  # aot VENV ARCH [VAR=VALUE...]
mkdir -p "$OUT" "$PTXAS_DIR"
status=0
if [ -z "${CUOBJDUMP12:-}" ]; then
  for tool in $(ls -d "$VENVS"/triton-3.*/lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump 2>/dev/null | sort -rV); do
    "$tool" --version 2>/dev/null | grep -q 'release 12\.' && { CUOBJDUMP12="$tool"; break; }
  done
fi
[ -n "${CUOBJDUMP12:-}" ] || { echo "no CUDA 12 cuobjdump under $VENVS (set CUOBJDUMP12)" >&2; exit 2; }
header="# $(date -u +%F): each venv's own ptxas"
[ -z "$CUDAS" ] || header="$header; sm_${ARCHS// /, sm_} with CUDA ${CUDAS// /, }'s ptxas; binaries of CUDA < 13 read by CUDA $("$CUOBJDUMP12" --version | grep -o 'release [0-9.]*' | cut -d' ' -f2)'s cuobjdump"
echo "$header" >> "$OUT/ptxas.txt"

ptxas_of() {  # CUDA major.minor -> a wrapper that counts its calls in $PTXAS_DIR/<cuda>/calls, then runs that ptxas
  local cuda="$1" dir="$PTXAS_DIR/$1" wheel real
  if [ ! -x "$dir/ptxas" ]; then
    case "$cuda" in 11.*) wheel=nvidia-cuda-nvcc-cu11 ;; 12.*) wheel=nvidia-cuda-nvcc-cu12 ;; *) wheel=nvidia-cuda-nvcc ;; esac
    mkdir -p "$dir/wheel"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d "$dir/wheel" "$wheel==$cuda.*" \
      2> >(grep -v "^WARNING: Location" >&2) >&2 || return 1
    "$PY" -m zipfile -e "$dir"/wheel/*.whl "$dir/wheel" || return 1
    real=$(find "$dir/wheel" -path '*/bin/ptxas' -type f | head -n 1)
    [ -n "$real" ] || return 1
    chmod +x "$real"
    printf '#!/bin/sh\necho >> "%s/calls"\nexec "%s" "$@"\n' "$dir" "$real" > "$dir/ptxas"
    chmod +x "$dir/ptxas"
  fi
  echo "$dir/ptxas"
}

for tag in "$@"; do
  venv="$VENVS/$tag"
  [ -x "$venv/bin/python" ] || { echo "$tag: no venv at $venv (run tools/triton_versions.sh first)" | tee -a "$OUT/ptxas.txt"; status=1; continue; }
  version=$("$venv/bin/python" -c 'import triton; print(triton.__version__)')
  # the wheel's own, per architecture family (Ampere/Ada/Orin, Hopper, Blackwell/Thor): no compile
  echo "triton $version ($tag): its own ptxas: $(env -u TRITON_PTXAS_PATH -u TRITON_PTXAS_BLACKWELL_PATH "$venv/bin/python" -c \
    "from edgefuse.kernels.platform import triton_ptxas as t; print(', '.join('sm_%d CUDA %s (%s)' % (a, *t(a)[1:]) for a in (87, 90, 100)))")" \
    | tee -a "$OUT/ptxas.txt"
  for arch in $ARCHS; do
    read -r own var < <(env -u TRITON_PTXAS_PATH -u TRITON_PTXAS_BLACKWELL_PATH "$venv/bin/python" -c \
                          "from edgefuse.kernels.platform import triton_ptxas as t; print(*t($arch)[1:])")
    for cuda in $CUDAS; do
      ptxas=$(ptxas_of "$cuda") || { echo "CUDA $cuda: no ptxas from PyPI" | tee -a "$OUT/ptxas.txt"; status=1; continue; }
      : > "$PTXAS_DIR/$cuda/calls"
      reader=()
      case "$cuda" in 1[0-2].*) reader=("TRITON_CUOBJDUMP_PATH=$CUOBJDUMP12") ;; esac
      got=$(aot "$venv" "$arch" "$var=$ptxas" "${reader[@]}")
      calls=$(wc -l < "$PTXAS_DIR/$cuda/calls")
      line="triton $version ($tag): sm_$arch, own ptxas CUDA $own; with CUDA $cuda's ptxas as $var ($calls calls): $got"
      [ "$calls" -gt 0 ] || { line="$line; NOT USED"; status=1; }
      echo "$line" | tee -a "$OUT/ptxas.txt"
    done
  done
done
exit $status
