#!/usr/bin/env bash
# Which Triton releases compile the kernels for the Blackwell GPUs (sm_100 B200, sm_110
# Jetson Thor, sm_120 RTX 50, sm_121 DGX Spark; $ARCHS), without a GPU, and whether
# edgefuse.kernels.platform.TRITON_TARGETS (what dispatch checks before the first launch) says the
# same (triton_target_status). For each venv that tools/triton_versions.sh made (under
# $VENVS) and each architecture: the AOT compile of every benchmark launch (tools/aot.py, an empty Triton
# cache) with the wheel's own ptxas; if that fails without aborting, again with a CUDA 13
# ptxas named by Triton's TRITON_PTXAS_PATH and TRITON_PTXAS_BLACKWELL_PATH, then with each
# alone. JetPack 7 has one at /usr/local/cuda/bin/ptxas; here $PTXAS13 (default: the
# ptxas-blackwell of the newest Triton venv, CUDA 13.x) stands in for it. Appends one line per
# venv and architecture to $OUT/targets.txt and exits 1 when one disagrees with the table.
# (sm_80 to sm_90 compile with every release: triton_versions.sh checks sm_87 and sm_90.)
#
#   OUT=bench/results/aot bash tools/triton_targets.sh triton-3.0.0 triton-3.6.0 triton-3.9.0
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local}"
VENVS="${VENVS:-/tmp/edgefuse-triton-venvs}"
ARCHS="${ARCHS:-100 110 120 121}"
[ $# -gt 0 ] || { echo "usage: bash tools/triton_targets.sh VENV_TAG... (venvs under $VENVS, made by triton_versions.sh)" >&2; exit 2; }
if [ -z "${PTXAS13:-}" ]; then
  PTXAS13=$(ls -d "$VENVS"/triton-3.*/lib/python3*/site-packages/triton/backends/nvidia/bin/ptxas-blackwell 2>/dev/null \
              | sort -V | tail -n 1)
fi
ptxas13=$("$PTXAS13" --version 2>/dev/null | grep -o 'release [0-9.]*' | cut -d' ' -f2)
case "$ptxas13" in 13.*) ;; *) echo "PTXAS13=$PTXAS13 is not a CUDA 13 ptxas (got '${ptxas13:-nothing}')" >&2; exit 2 ;; esac
mkdir -p "$OUT"
status=0

source tools/_aot.sh  # aot VENV ARCH [VAR=VALUE...]

for tag in "$@"; do
  venv="$VENVS/$tag"
  [ -x "$venv/bin/python" ] || { echo "$tag: no venv at $venv (run tools/triton_versions.sh first)" | tee -a "$OUT/targets.txt"; status=1; continue; }
  version=$("$venv/bin/python" -c 'import triton; print(triton.__version__)')
  for arch in $ARCHS; do
    # measured, in the table's words: own (compiles as installed), aborts, fails, or the
    # variable(s) that make it compile when they name CUDA 13's ptxas
    own=$(aot "$venv" "$arch")
    line="triton $version ($tag): sm_$arch with its own ptxas: $own"
    case "$own" in
      compiled*) measured=own ;;
      *SIGABRT*) measured=aborts ;;  # no ptxas gets that far
      *)
        measured=""
        both=$(aot "$venv" "$arch" TRITON_PTXAS_PATH="$PTXAS13" TRITON_PTXAS_BLACKWELL_PATH="$PTXAS13")
        line="$line; with CUDA $ptxas13's ptxas as TRITON_PTXAS_PATH and TRITON_PTXAS_BLACKWELL_PATH: $both"
        case "$both" in compiled*)
          for var in TRITON_PTXAS_PATH TRITON_PTXAS_BLACKWELL_PATH; do
            alone=$(aot "$venv" "$arch" "$var=$PTXAS13")
            line="$line; $var alone: $alone"
            case "$alone" in compiled*) measured="${measured:+$measured,}$var" ;; esac
          done ;;
        esac
        measured="${measured:-fails}" ;;
    esac
    table=$("$venv/bin/python" -c "import triton; from edgefuse.kernels.platform import triton_target_status as s; print(s($arch, triton.__version__) or 'own')")
    if [ "$table" = "$measured" ]; then
      line="$line; table: $table, agrees"
    else
      line="$line; table: $table, DISAGREES (measured: $measured)"
      status=1
    fi
    echo "$line" | tee -a "$OUT/targets.txt"
  done
done
exit $status
