"""``launch`` (kernels/_launch.py), the launchers' way to launch a kernel they launched before.

It skips Triton's JIT dispatch on a repeat call, so what matters is that it hands the CUDA
driver exactly what Triton's own path would: the same binary, the same arguments. That is
checked without a GPU by tests/kernels/launch_check.py, in compiled mode on a stand-in sm_90
GPU, over the launches of all three ops; and each of two deliberately wrong variants of
``launch`` (a key blind to pointer alignment, the constexprs passed or not on the wrong
Triton releases) must be caught by it. On a GPU, every kernel test's repeat call runs
through ``launch``'s cache, so their results check it numerically too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgefuse.kernels import _launch

CHECK = Path(__file__).with_name("launch_check.py")
SUMMARY = re.compile(
    r"(\d+) launches through launch compared with Triton's path, (\d+) from launch's cache; (\d+) difference"
)


def _check(*flags: str) -> tuple[int, str, tuple[int, int, int] | None]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "EDGEFUSE_KERNELS")}  # compiled mode
    run = subprocess.run(
        [sys.executable, str(CHECK), *flags], env=env, cwd=CHECK.parents[2], capture_output=True, text=True, timeout=300
    )
    found = SUMMARY.search(run.stdout)
    return run.returncode, run.stdout + run.stderr[-3000:], tuple(map(int, found.groups())) if found else None


def test_launch_hands_the_driver_what_tritons_path_does():
    code, log, counts = _check()
    assert code == 0 and counts is not None, log
    compared, hits, differences = counts
    assert differences == 0, log
    assert compared >= 50 and hits >= 30, log  # most calls were repeats, served from launch's cache


@pytest.mark.parametrize("mutant", ["no-align", "no-constexprs"])
def test_a_wrong_launch_is_caught(mutant):
    code, log, counts = _check("--mutant", mutant)
    assert code == 1 and counts is not None and counts[2] > 0, log


@pytest.mark.parametrize(
    "version, used",
    [
        ("3.0.0", True),
        ("3.6.0", True),
        ("3.9.0", True),
        ("3.9.1", True),
        ("3.7.0+git1a2b", True),
        ("3.10.0", False),
        ("4.0.0", False),
        ("2.3.1", False),
        ("main", False),
    ],
)
def test_launch_takes_over_only_on_checked_triton_releases(version, used):
    assert _launch.checked(version) is used
