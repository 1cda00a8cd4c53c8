"""Every mask and every store in the kernels is needed, and the tests notice when one goes.

Mutants of the kernel modules, each run interpreted, under the guard (tests/kernels/_guard.py)
and with poisoned allocations (tests/kernels/conftest.py), on cases with a tail in every
dimension (B, K, D or O, N not multiples of the blocks; an absent modality, in the middle and
last; every launch path):

- for each ``tl.load``/``tl.store`` with a ``mask=``, one with that mask (and its ``other``)
  dropped: it must fail out of bounds, as a race between programs, or off the reference;
- for each ``tl.store``, one without that store: part of an output stays unwritten (NaN from
  the poisoned allocation), so it must fail off the float64 reference.

One that passed would be a mask or store the tests cannot see, which is how a kernel that
faults, races or returns stale memory on the GPU gets through CPU CI.

``edgefuse kernels --check`` must notice a dropped store too (the last test).
"""

from __future__ import annotations

import pytest
import torch

from edgefuse.kernels import selfcheck
from tests.kernels._guard import guard
from tests.kernels._mutants import CASES, MODULES, mutant, mutations, run_cases

MUTANTS = [
    pytest.param(name, line, kind, id=f"{name}:{line}:{kind.replace(' ', '-')}")
    for name in MODULES
    for line, kind in mutations(name)
]


@pytest.mark.parametrize("name", list(MODULES))
def test_the_cases_pass_on_the_kernels_as_written(name, tmp_path):
    """On the modules, and on copies made as the mutants are: what fails a mutant is its mutation."""
    with guard():
        for module in (MODULES[name], mutant(name, None, "none", tmp_path)):
            assert run_cases(name, module) == ["pass"] * len(CASES[name])


def test_every_module_has_masks_and_stores_to_drop():
    for name in MODULES:
        kinds = [kind for _, kind in mutations(name)]
        assert kinds.count("load mask") >= 3 and kinds.count("store mask") >= 2 and kinds.count("store") >= 2, (
            name,
            kinds,
        )


@pytest.mark.parametrize("name,line,kind", MUTANTS)
def test_a_mutant_fails_a_case(name, line, kind, tmp_path):
    with guard():
        outcomes = run_cases(name, mutant(name, line, kind, tmp_path))
    what = f"the {kind.split()[0]}'s mask" if kind.endswith(" mask") else "the store"
    assert set(outcomes) != {"pass"}, f"{name}.py line {line}: {what} can be dropped and every case still passes"


#: each kernel module's launchers, as kernels/selfcheck.py calls them, and the ops they serve
LAUNCHERS = {
    "triton_projection": ("fused_projection_triton", "fused_projection_train"),
    "triton_bilinear": ("bilinear_triton", "mfb_triton"),
    "triton_gated": ("gated_fusion_triton", "GatedFusionFunction"),
}
MODULE_OPS = {
    "triton_projection": {"fused_projection"},
    "triton_bilinear": {"mfb", "bilinear"},
    "triton_gated": {"gated_fusion"},
}


@pytest.mark.parametrize("name", list(MODULES))
def test_edgefuse_kernels_check_fails_when_a_kernel_drops_a_store(name, monkeypatch, tmp_path):
    """``edgefuse kernels --check`` (kernels/selfcheck.py) on the module's first store-dropping
    mutant: its ops' cases fail (the poisoned allocation leaves NaN, or the empty flag unset),
    the others pass."""
    line = next(line for line, kind in mutations(name) if kind == "store")
    bad = mutant(name, line, "store", tmp_path)
    for launcher in LAUNCHERS[name]:
        monkeypatch.setattr(MODULES[name], launcher, getattr(bad, launcher))
    with guard():  # mutants run interpreted whatever the machine has
        cases = selfcheck.check("cpu", batches=(1, 67), dim=24, widths=(40, 24, 8), dtypes=(torch.float32,))
    failed = {c.op for c in cases if not c.ok}
    assert failed and failed <= MODULE_OPS[name], failed
