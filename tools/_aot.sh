# Sourced by the Triton-release scripts (triton_targets.sh, triton_ptxas.sh): one AOT compile of
# every benchmark launch (tools/aot.py) in a venv, for one architecture, with an empty Triton
# cache and no ptxas or cuobjdump variable but those given.

aot() {  # venv, arch, env assignments...: "compiled N binaries" or "failed (rc R): first error line"
  local py="$1/bin/python" arch="$2" cache log rc msg
  shift 2
  cache=$(mktemp -d); log=$(mktemp)
  env -u TRITON_INTERPRET -u TRITON_PTXAS_PATH -u TRITON_PTXAS_BLACKWELL_PATH -u TRITON_CUOBJDUMP_PATH TRITON_CACHE_DIR="$cache" "$@" \
    "$py" -m tools.aot --arch "$arch" >"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    grep -o -m1 'compiled [0-9]* binaries' "$log"
  else
    msg=$(grep -m1 -E 'fatal|LLVM ERROR|Assertion' "$log" || grep -m1 'Error:' "$log")  # the compiler's own words first
    echo "failed (rc $rc$([ $rc -eq 134 ] && echo ', SIGABRT')): $(echo "$msg" | sed 's/.*\(Assertion .*\)/\1/' | cut -c1-120)"
  fi
  rm -rf "$cache" "$log"
}
