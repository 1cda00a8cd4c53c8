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
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import pytest
import torch
from triton.runtime.errors import InterpreterError

import edgefuse.kernels.triton_bilinear
import edgefuse.kernels.triton_gated
import edgefuse.kernels.triton_projection
from edgefuse.kernels import reference as ref
from tests.kernels._guard import guard

MODULES = {
    "triton_projection": edgefuse.kernels.triton_projection,
    "triton_bilinear": edgefuse.kernels.triton_bilinear,
    "triton_gated": edgefuse.kernels.triton_gated,
}


def _is_tl(node, what: str) -> bool:
    """``node`` is a call of ``tl.<what>``."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == what
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "tl")


def _mutations(source: str) -> list[tuple[int, str]]:
    """(line, kind) of every mutation of ``source``: kind 'load mask' or 'store mask' (a masked
    access), 'store' (every tl.store, as a statement)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        for what in ("load", "store"):
            if _is_tl(node, what) and any(k.arg == "mask" for k in node.keywords):
                found.append((node.lineno, f"{what} mask"))
        if isinstance(node, ast.Expr) and _is_tl(node.value, "store"):
            found.append((node.lineno, "store"))
    return sorted(found)


class _Mutate(ast.NodeTransformer):
    """Drop the mask (and ``other``) of the load or store on ``line``, or the store itself."""

    def __init__(self, line: int, kind: str):
        self.line, self.kind, self.done = line, kind, False

    def visit_Call(self, node):
        self.generic_visit(node)
        if node.lineno == self.line and self.kind.endswith(" mask") and _is_tl(node, self.kind.split()[0]):
            node.keywords = [k for k in node.keywords if k.arg not in ("mask", "other")]
            self.done = True
        return node

    def visit_Expr(self, node):
        self.generic_visit(node)
        if node.lineno == self.line and self.kind == "store" and _is_tl(node.value, "store"):
            self.done = True
            return ast.copy_location(ast.Pass(), node)
        return node


def _mutant(name: str, line: int | None, kind: str, tmp_path: Path, monkeypatch):
    """The module ``name`` with the mutation ``kind`` on ``line`` (line None: a copy that went
    through the same parse, unparse and import), its kernels interpreted."""
    tree = ast.parse(inspect.getsource(MODULES[name]))
    if line is not None:
        mutate = _Mutate(line, kind)
        tree = ast.fix_missing_locations(mutate.visit(tree))
        assert mutate.done
    path = tmp_path / f"{name}_{kind.replace(' ', '_')}{line}.py"
    path.write_text(ast.unparse(tree))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the mutants run on CPU tensors, whatever this machine has
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from triton.runtime.interpreter import InterpretedFunction

    from edgefuse.kernels.aot import kernels_in

    kernels = kernels_in(module).values()
    assert kernels and all(isinstance(k, InterpretedFunction) for k in kernels), "mutants must run interpreted"
    return module


def _rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def _close(out, expected):
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


# Cases: CPU float32, every dimension with a tail. Each takes the module under test.

def _projection_cases(m):
    g = torch.Generator().manual_seed(0)
    ks, b = (5, 33, 20), 17  # B: two 16-row tiles; K: tails of 5, 1 and 4 columns
    bias = _rand(g, 3, 24)
    ws = [_rand(g, 24, k, scale=k**-0.5) for k in ks]  # D = 24: a tail in every column tile
    # an absent modality in the middle, then last: a row written past D lands in the next
    # modality's columns (a race between programs) or past the end of the output
    for absent in (1, 2):
        xs = [None if i == absent else _rand(g, b, k) for i, k in enumerate(ks)]
        xs64 = [None if x is None else x.double() for x in xs]
        expected = ref.fused_projection_reference(xs64, [w.double() for w in ws], bias.double(), "relu", True)
        for config in [(16, 32, 16, 4, True),  # the L2 norm in the epilogue
                       (16, 16, 16, 4, False),  # the row-norm launch
                       (16, 16, 16, 4, False, 3)]:  # split-K: partials and their epilogue
            _close(m.fused_projection_triton(xs, ws, bias, "relu", True, config=config), expected)


def _bilinear_cases(m):
    g = torch.Generator().manual_seed(1)
    b, k1, k2, o = 17, 19, 21, 35  # tails in B, both K (16-wide blocks) and O (64-wide)
    x, y, w, bias = _rand(g, b, k1), _rand(g, b, k2), _rand(g, o, k1, k2, scale=0.1), _rand(g, o)
    _close(m.bilinear_triton(x, y, w, bias), torch.nn.functional.bilinear(x.double(), y.double(), w.double(), bias.double()))


def _mfb_cases(m):
    g = torch.Generator().manual_seed(2)
    b, k1, k2, o, f = 17, 37, 21, 10, 3  # factors 3 of a block of 4; O 10 of 16
    x, y = _rand(g, b, k1), _rand(g, b, k2)
    u_w, v_w = _rand(g, o * f, k1, scale=k1**-0.5), _rand(g, o * f, k2, scale=k2**-0.5)
    u_b, v_b = _rand(g, o * f), _rand(g, o * f)
    present = torch.rand(b, 2, generator=g) > 0.3
    args64 = [t.double() for t in (x, y, u_w, u_b, v_w, v_b)]
    expected = ref.mfb_reference(*args64, f, present, True)
    for config in [(16, 16, 16, 4), (16, 4, 16, 4)]:  # L2 norm fused (one block spans O), or a second launch
        _close(m.mfb_triton(x, y, u_w, u_b, v_w, v_b, f, present, True, config=config), expected)


def _gated_cases(m):
    g = torch.Generator().manual_seed(3)
    b, n, d = 3, 3, 1100  # N 3 of a block of 4; D: a 1024-block and a tail
    feats = _rand(g, b, n, d)
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, False]])
    dout = _rand(g, b, d)
    for logits in (_rand(g, b, n), _rand(g, b, n, d)):  # per modality, per feature
        f64, l64 = feats.double().requires_grad_(), logits.double().requires_grad_()
        out64, empty64 = ref.gated_fusion_reference(f64, l64, mask, "softmax")
        dfeat64, dlogit64 = torch.autograd.grad(out64, (f64, l64), dout.double())
        out, empty = m.gated_fusion_triton(feats, logits, mask, "softmax")
        assert torch.equal(empty, empty64)
        _close(out, out64)
        dfeat, dlogit = m.gated_fusion_backward_triton(feats, logits, mask, dout, "softmax")
        _close(dfeat, dfeat64)
        _close(dlogit, dlogit64)


CASES = {
    "triton_projection": [_projection_cases],
    "triton_bilinear": [_bilinear_cases, _mfb_cases],
    "triton_gated": [_gated_cases],
}

MUTANTS = [
    pytest.param(name, line, kind, id=f"{name}:{line}:{kind.replace(' ', '-')}")
    for name, module in MODULES.items()
    for line, kind in _mutations(inspect.getsource(module))
]


@pytest.mark.parametrize("name", list(MODULES))
def test_the_cases_pass_on_the_kernels_as_written(name, tmp_path, monkeypatch):
    """On the modules, and on copies made as the mutants are: what fails a mutant is its mutation."""
    with guard():
        for module in (MODULES[name], _mutant(name, None, "none", tmp_path, monkeypatch)):
            for case in CASES[name]:
                case(module)


def test_every_module_has_masks_and_stores_to_drop():
    for name, module in MODULES.items():
        kinds = [kind for _, kind in _mutations(inspect.getsource(module))]
        assert kinds.count("load mask") >= 3 and kinds.count("store mask") >= 2 and kinds.count("store") >= 2, (name, kinds)


@pytest.mark.parametrize("name,line,kind", MUTANTS)
def test_a_mutant_fails_a_case(name, line, kind, tmp_path, monkeypatch):
    mutant = _mutant(name, line, kind, tmp_path, monkeypatch)
    failures = []
    with guard():
        for case in CASES[name]:
            try:
                case(mutant)
            except InterpreterError as e:
                caught = next((kind for kind in ("OutOfBounds", "Race") if kind in str(e)), None)
                if caught is None:
                    raise  # the mutant broke some other way: not what this test is about
                failures.append(f"{case.__name__}: {caught}")
            except AssertionError as e:
                failures.append(f"{case.__name__}: {str(e).splitlines()[0]}")
    what = f"the {kind.split()[0]}'s mask" if kind.endswith(" mask") else "the store"
    assert failures, f"{name}.py line {line}: {what} can be dropped and every case still passes"
