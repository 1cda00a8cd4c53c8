"""What the GPU run of the kernel tests compiles, and how long that takes, without a GPU.

bench/gpu_check.sh runs ``tests/kernels`` compiled on the GPU under a time limit, and every
parametrisation compiles its own binaries. This runs the same tests through Triton's real JIT
on a stand-in ``sm_<arch>`` GPU (``tools.aot.stand_in_gpu``): each launch compiles
exactly as on that GPU, and runs nothing, so the tests' checks of results fail; what counts is
the binaries each kernel needed, the seconds spent compiling them (on this machine, one
process, an empty Triton cache), every error Triton's compile and launch path raised (with the
test that hit it), how many of the tests' launches kernels/_launch served from its cache (on
the GPU, those tests check that path numerically), and each binary's registers, spills and
shared memory against the target's limit (``aot.problems``, as the AOT check does at the
benchmark shapes; the tests' shapes are other ones). Exits 1 on an error or a problem, so a test shape
that would not compile on the GPU is found here first. Tests that force ``EDGEFUSE_KERNELS=interpret`` where there is
no GPU (the model tests of test_dispatch.py) stop before compiling here, so the few binaries of
their small model shapes are not counted. Writes ``gpu_test_binaries.json``.

    python tools/count_gpu_test_binaries.py --out bench/results/local
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run from anywhere: the repository root (tools.*, tests.*) and bench/ (its _common helpers) on the path
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "bench")) if p not in sys.path]


class _Count:
    """A pytest plugin: the whole session under the stand-in GPU, timing each launch that
    compiled, inspecting its binary, and keeping what Triton's launch path raised."""

    def __init__(self, arch: int):
        self.arch, self.seconds = arch, 0.0
        self.records: dict = {}  # by CompiledKernel, as aot.check keys them: Triton's cache returns one per binary
        self.errors: list = []

    def pytest_sessionstart(self, session):
        import triton.runtime.jit as jit

        from tools import aot

        self._gpu = aot.stand_in_gpu(self.arch)
        self.launches = self._gpu.__enter__()  # every launch that reached the driver's launch
        self.runs = 0  # ... and those that came through Triton's JITFunction.run, not launch's cache
        run = self._run = jit.JITFunction.run

        def timed(fn, *args, **kwargs):
            self.runs += 1
            t = time.perf_counter()
            try:
                kernel = run(fn, *args, **kwargs)
            except Exception as e:  # a compile or launch-path error: on the GPU this test would fail the same way
                self.errors.append(
                    {"test": _current_test(), "kernel": fn.__name__, "error": f"{type(e).__name__}: {e}"[:2000]}
                )
                raise
            if id(kernel) not in self.records:  # this launch compiled it (the Triton cache dir starts empty)
                seconds = time.perf_counter() - t
                self.seconds += seconds
                launch = aot.launch_of(
                    fn, args, {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}, kwargs["grid"]
                )
                record = self.records[id(kernel)] = aot.record_of(
                    replace(launch, compiled=kernel, seconds=seconds), self.arch
                )
                record.cases.append(_current_test())  # the test that compiled it
            return kernel

        jit.JITFunction.run = timed

    def pytest_sessionfinish(self, session):
        import triton.runtime.jit as jit

        jit.JITFunction.run = self._run
        self._gpu.__exit__(None, None, None)


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("-k", dest="select", default="", help="only the tests pytest's -k selects (default: all)")
    args = p.parse_args(argv)
    os.environ["TRITON_INTERPRET"] = "0"  # compiled kernels (tests/conftest.py only sets it if unset)
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgefuse-count-")  # every binary compiles
    import pytest
    import torch
    import triton

    count = _Count(args.arch)
    # as bench/gpu_check.sh runs them (test_masks is CI-only; the AOT tests are under tests/tools)
    pytest.main(
        [
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests/kernels"),
            f"--ignore={ROOT / 'tests/kernels/test_masks.py'}",
            "--no-header",
            "--tb=no",
            "-rN",
            *(["-k", args.select] if args.select else []),
        ],
        plugins=[count],
    )
    from tools import aot

    records = list(count.records.values())
    counts = dict(collections.Counter(r.kernel for r in records))
    total = len(records)
    found = aot.problems(records)
    print(
        f"sm_{args.arch}: the kernel tests compile {total} binaries {counts}; "
        f"{count.seconds:.0f} s of compiling in one process here; {len(count.errors)} compile error(s), "
        f"{len(found)} problem(s) in the binaries"
    )
    launches = sum(count.launches.values())
    from_cache = launches - (count.runs - len(count.errors))  # a run that raised launched nothing
    print(
        f"launches: {launches} reached the driver's launch, {from_cache} of them from kernels/_launch's cache "
        "(on a GPU the tests' results check that path)"
    )
    for e in count.errors:
        print(f"  {e['test']}: {e['kernel']}: {e['error'].splitlines()[0]}")
    for line in found:
        print("  " + line)
    from _common import machine

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_test_binaries.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "versions": {"torch": torch.__version__, "triton": triton.__version__},
                "arch": args.arch,
                "selected": args.select or "all",
                "binaries": counts,
                "total": total,
                "compile_seconds_one_process": round(count.seconds, 1),
                "compile_errors": count.errors,
                "problems": found,
                "launches": launches,
                "launches_from_launch_cache": from_cache,
                "max_registers": max((r.registers for r in records), default=None),
                "max_shared_bytes": max((r.shared_bytes for r in records), default=None),
                "records": [asdict(r) for r in records],
            },
            indent=2,
        )
    )
    return 0 if total and not count.errors and not found else 1


if __name__ == "__main__":
    sys.exit(main())
