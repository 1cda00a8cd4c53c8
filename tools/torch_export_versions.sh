#!/usr/bin/env bash
# Export across torch releases. For each version given: a fresh venv with torch==VERSION (PyPI's
# CUDA build, several GB; it runs on the CPU) and this package, then tests/export. The line
# appended to $OUT/versions.txt names the stack, the tests' summary and, where an export
# failed, the first ExportFailed message (what a user of that torch is told).
# Exit status 1 when a release disagrees with edgefuse/export.py's table: one in
# EXPORT_TESTED_TORCH that fails, or one known to fail (torch_export_status: 'bad') whose
# failure is not reported as ExportFailed. Other releases are recorded, not judged.
# PYTHON picks the interpreter (torch 2.5 and older for Python 3.10: PYTHON=python3.10).
# Each venv is deleted after its run unless KEEP=1 (about 5 GB each).
# Where a pip constraints file caps torch (the development VMs' /etc/xdg/pip caps it at 2.14.1,
# so torch==2.15.0 "has conflicting dependencies"), PIP_CONSTRAINT=/dev/null lifts it for the run.
#
#   OUT=bench/results/torch_export bash tools/torch_export_versions.sh 2.6.0 2.9.1 2.10.0
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/local}"
VENVS="${VENVS:-/tmp/edgefuse-torch-venvs}"
PYTHON="${PYTHON:-python3}"
[ $# -gt 0 ] || { echo "usage: [PYTHON=python3.X] [OUT=DIR] bash tools/torch_export_versions.sh VERSION [VERSION...]" >&2; exit 2; }
mkdir -p "$OUT" "$VENVS"
status=0
for v in "$@"; do
  venv="$VENVS/torch-$v"
  rm -rf "$venv"
  if ! { "$PYTHON" -m venv "$venv" && "$venv/bin/pip" install -q --upgrade pip "setuptools>=69" wheel \
         && "$venv/bin/pip" install -q "torch==$v" && "$venv/bin/pip" install -q -e ".[test]"; } > "$venv.install.log" 2>&1; then
    echo "torch $v: install failed (see $venv.install.log)" | tee -a "$OUT/versions.txt"; status=1; rm -rf "$venv"; continue
  fi
  log="$venv.export.log"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/export > "$log" 2>&1
  rc=$?
  summary=$(tail -n 1 "$log")
  told=$(grep -m 1 -o 'ExportFailed: .*' "$log" | cut -c 15-)
  stack=$("$venv/bin/python" -c 'import sys, numpy, onnx, onnxruntime, onnxscript, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnxscript {onnxscript.__version__}, numpy {numpy.__version__}")')
  # what edgefuse/export.py says of this release: tested, known bad, or neither
  expect=$("$venv/bin/python" -c 'import torch; from edgefuse.export import torch_export_status; print(torch_export_status(torch.__version__)[0])')
  verdict="agrees with edgefuse/export.py ($expect)"
  if [ "$expect" = tested ] && [ "$rc" -ne 0 ]; then verdict="DISAGREES: listed as tested, but tests/export failed"; status=1
  elif [ "$expect" = bad ] && [ -z "$told" ]; then verdict="DISAGREES: listed as failing, but no ExportFailed was reported"; status=1
  elif [ "$expect" = unknown ]; then verdict="not in edgefuse/export.py's table"; fi
  echo "torch $v ($stack): tests/export: $summary; $verdict${told:+; a user is told: $told}" | tee -a "$OUT/versions.txt"
  [ "${KEEP:-0}" = 1 ] || rm -rf "$venv"
done
exit $status
