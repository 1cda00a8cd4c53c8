#!/usr/bin/env bash
# Which Triton releases compile the kernels for Jetson Thor (sm_110), without a GPU, and
# whether edgefuse.kernels.ops.triton_target_error (what dispatch checks before the first
# launch) says the same. For each venv that bench/triton_versions.sh made (under $VENVS): the
# AOT compile of every benchmark launch for sm_110 (kernels/aot.py, an empty Triton cache)
# with the wheel's own ptxas; if that fails, again with a CUDA 13 ptxas named by Triton's
# TRITON_PTXAS_PATH and TRITON_PTXAS_BLACKWELL_PATH, then with each alone. JetPack 7 has
# one at /usr/local/cuda/bin/ptxas; here $PTXAS13 (default: the ptxas-blackwell of the newest
# Triton venv, CUDA 13.x) stands in for it. Appends one line per venv to $OUT/sm110.txt and
# exits 1 when a release disagrees with the table.
#
#   OUT=bench/results/aot bash bench/triton_targets.sh triton-3.0.0 triton-3.6.0 triton-3.9.0
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local}"
VENVS="${VENVS:-/tmp/edgefuse-triton-venvs}"
[ $# -gt 0 ] || { echo "usage: bash bench/triton_targets.sh VENV_TAG... (venvs under $VENVS, made by triton_versions.sh)" >&2; exit 2; }
if [ -z "${PTXAS13:-}" ]; then
  PTXAS13=$(ls -d "$VENVS"/triton-3.*/lib/python3*/site-packages/triton/backends/nvidia/bin/ptxas-blackwell 2>/dev/null \
              | sort -V | tail -n 1)
fi
ptxas13=$("$PTXAS13" --version 2>/dev/null | grep -o 'release [0-9.]*' | cut -d' ' -f2)
case "$ptxas13" in 13.*) ;; *) echo "PTXAS13=$PTXAS13 is not a CUDA 13 ptxas (got '${ptxas13:-nothing}')" >&2; exit 2 ;; esac
mkdir -p "$OUT"
status=0

aot() {  # venv, env assignments...: "compiled N binaries" or "failed (rc R): first error line"
  local py="$1/bin/python" cache log rc
  shift
  cache=$(mktemp -d); log=$(mktemp)
  env -u TRITON_INTERPRET -u TRITON_PTXAS_PATH -u TRITON_PTXAS_BLACKWELL_PATH TRITON_CACHE_DIR="$cache" "$@" \
    "$py" -m edgefuse.kernels.aot --arch 110 >"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    grep -o 'compiled [0-9]* binaries' "$log" | awk '{n += $2} END {print "compiled " n " binaries"}'
  else
    echo "failed (rc $rc$([ $rc -eq 134 ] && echo ', SIGABRT')): $(grep -m1 -E 'fatal|LLVM ERROR|Error:|Assertion' "$log" | sed 's/.*\(Assertion .*\)/\1/' | cut -c1-120)"
  fi
  rm -rf "$cache" "$log"
}

for tag in "$@"; do
  venv="$VENVS/$tag"
  [ -x "$venv/bin/python" ] || { echo "$tag: no venv at $venv (run bench/triton_versions.sh first)" | tee -a "$OUT/sm110.txt"; status=1; continue; }
  version=$("$venv/bin/python" -c 'import triton; print(triton.__version__)')
  own=$(aot "$venv")
  line="triton $version ($tag): sm_110 with its own ptxas: $own"
  works=""
  case "$own" in compiled*) works="own" ;; esac
  if [ -z "$works" ]; then
    both=$(aot "$venv" TRITON_PTXAS_PATH="$PTXAS13" TRITON_PTXAS_BLACKWELL_PATH="$PTXAS13")
    line="$line; with CUDA $ptxas13's ptxas as TRITON_PTXAS_PATH and TRITON_PTXAS_BLACKWELL_PATH: $both"
    case "$both" in compiled*)
      for var in TRITON_PTXAS_PATH TRITON_PTXAS_BLACKWELL_PATH; do
        alone=$(aot "$venv" "$var=$PTXAS13")
        line="$line; $var alone: $alone"
        case "$alone" in compiled*) works="${works:+$works,}$var" ;; esac
      done ;;
    esac
  fi
  # the table's answers: with no variable, and with each variable alone
  table=$("$venv/bin/python" - <<'EOF'
from edgefuse.kernels.ops import triton_target_error
import triton
v = triton.__version__
ok = ["own"] if triton_target_error(110, v, {}) is None else []
ok += [var for var in ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")
       if not ok and triton_target_error(110, v, {var: "/usr/local/cuda/bin/ptxas"}) is None]
print(",".join(ok))
EOF
)
  if [ "$table" = "$works" ]; then
    line="$line; table: ${table:-none works}, agrees"
  else
    line="$line; table: ${table:-none works}, DISAGREES (measured: ${works:-none works})"
    status=1
  fi
  echo "$line" | tee -a "$OUT/sm110.txt"
done
exit $status
