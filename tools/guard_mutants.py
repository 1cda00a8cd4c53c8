"""What the test-time guard and poisoned allocations catch that Triton's bare interpreter does not.

Every mutant of tests/kernels/_mutants.py (a kernel mask dropped, or a store) runs its cases
twice, each in a process of its own:

* ``guarded``: as the tests run it, under ``guard()`` and ``poisoned_allocations()``;
* ``bare``: Triton's interpreter as it is. A dropped mask then reads and writes whatever memory
  the address holds, so the process may corrupt its heap and die ('crash').

Each run's outcome is 'caught: OutOfBounds' / 'caught: Race' (the guard), 'wrong' (a case off
the float64 reference), 'pass' (every case passed) or 'crash'. Writes ``guard_mutants.json``.

    python tools/guard_mutants.py --out bench/results/local
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run from anywhere: the repository root (tools.*, tests.*) and bench/ (its _common helpers) on the path
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "bench")) if p not in sys.path]


def _one(name: str, line: int, kind: str, guarded: bool) -> str:
    """Run one mutant's cases in this process; its outcome."""
    import contextlib

    from tests.kernels._guard import guard, poisoned_allocations
    from tests.kernels._mutants import mutant, run_cases

    with tempfile.TemporaryDirectory() as tmp:
        module = mutant(name, line, kind, tmp)
        with (
            guard() if guarded else contextlib.nullcontext(),
            poisoned_allocations() if guarded else contextlib.nullcontext(),
        ):
            outcomes = run_cases(name, module)
    caught = [o for o in outcomes if o in ("OutOfBounds", "Race")]
    if caught:
        return f"caught: {caught[0]}"
    return "wrong" if any(o.startswith("wrong") for o in outcomes) else "pass"


def _in_subprocess(name: str, line: int, kind: str, guarded: bool) -> str:
    cmd = [sys.executable, __file__, "--one", name, str(line), kind] + (["--guarded"] if guarded else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    last = run.stdout.strip().splitlines()[-1:] or [""]
    if run.returncode != 0 or not last[0].startswith("outcome: "):
        return "crash"  # the bare interpreter wrote over the heap, or read unmapped memory
    return last[0].removeprefix("outcome: ")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--one", nargs=3, metavar=("MODULE", "LINE", "KIND"), help=argparse.SUPPRESS)
    p.add_argument("--guarded", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.one:
        os.environ["TRITON_INTERPRET"] = "1"  # before any kernel module is imported: all of them interpreted
        name, line, kind = args.one
        print(f"outcome: {_one(name, int(line), kind, args.guarded)}", flush=True)
        return 0
    if args.out is None:
        p.error("--out is required")
    import torch
    import triton
    from _common import machine

    from tests.kernels._mutants import MODULES, mutations

    todo = [(name, line, kind) for name in MODULES for line, kind in mutations(name)]
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # one process per run: as many at once as cores
        runs = {(m, g): pool.submit(_in_subprocess, *m, g) for m in todo for g in (True, False)}
        rows = []
        for name, line, kind in todo:
            row = {
                "module": name,
                "line": line,
                "kind": kind,
                "guarded": runs[(name, line, kind), True].result(),
                "bare": runs[(name, line, kind), False].result(),
            }
            rows.append(row)
            print(f"{name}:{line} {kind:10s} guarded: {row['guarded']:20s} bare: {row['bare']}", flush=True)
    summary = {}
    for kinds, label in (({"load mask", "store mask"}, "masks"), ({"store"}, "stores")):
        sel = [r for r in rows if r["kind"] in kinds]
        summary[label] = {
            "mutants": len(sel),
            "guarded": dict(collections.Counter(r["guarded"] for r in sel)),
            "bare": dict(collections.Counter(r["bare"] for r in sel)),
        }
    print(json.dumps(summary, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "guard_mutants.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "versions": {"torch": torch.__version__, "triton": triton.__version__},
                "summary": summary,
                "mutants": rows,
            },
            indent=2,
        )
    )
    return 0 if all(r["guarded"] != "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
