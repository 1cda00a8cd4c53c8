# Sourced by the device-check scripts: an offline install of edgefuse over the image's own
# torch/triton/onnxruntime (no dependencies pulled), or a copied tree on PYTHONPATH.
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1; then
  echo "editable install failed (see install.log); using a copied tree on PYTHONPATH"
  SHIM=$(mktemp -d); cp -r edgefuse "$SHIM/"
  for d in kernels engines calibration; do cp -r "$d" "$SHIM/edgefuse/$d"; done
  export PYTHONPATH="$SHIM:${PYTHONPATH:-}"
fi
