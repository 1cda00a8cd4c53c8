"""Mutants of the kernel modules and the cases they run on (tests/kernels/test_masks.py,
tools/guard_mutants.py).

- For each ``tl.load``/``tl.store`` with a ``mask=``, a mutant with that mask (and its
  ``other``) dropped ('load mask', 'store mask').
- For each ``tl.store``, a mutant without that store ('store').

The cases are float32 on CPU with a tail in every dimension (B, K, D or O, N not multiples of
the blocks), an absent modality in the middle and last, and every launch path.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
from pathlib import Path

import torch

import edgefuse.kernels.triton_bilinear
import edgefuse.kernels.triton_gated
import edgefuse.kernels.triton_projection
from edgefuse.kernels import reference as ref

MODULES = {
    "triton_projection": edgefuse.kernels.triton_projection,
    "triton_bilinear": edgefuse.kernels.triton_bilinear,
    "triton_gated": edgefuse.kernels.triton_gated,
}


def _is_tl(node, what: str) -> bool:
    """``node`` is a call of ``tl.<what>``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == what
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "tl"
    )


def mutations(name: str) -> list[tuple[int, str]]:
    """(line, kind) of every mutation of module ``name``: kind 'load mask' or 'store mask' (a masked
    access), 'store' (every tl.store, as a statement)."""
    found = []
    for node in ast.walk(ast.parse(inspect.getsource(MODULES[name]))):
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


def mutant(name: str, line: int | None, kind: str, directory: Path):
    """The module ``name`` with the mutation ``kind`` on ``line`` (line None: a copy that went
    through the same parse, unparse and import), its kernels interpreted whatever this machine
    has (they run on CPU tensors). The source is written under ``directory``."""
    tree = ast.parse(inspect.getsource(MODULES[name]))
    if line is not None:
        mutate = _Mutate(line, kind)
        tree = ast.fix_missing_locations(mutate.visit(tree))
        assert mutate.done
    path = Path(directory) / f"{name}_{kind.replace(' ', '_')}{line}.py"
    path.write_text(ast.unparse(tree))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    interpret = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"  # read when the module's kernels are decorated
    try:
        spec.loader.exec_module(module)
    finally:
        if interpret is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = interpret
    from triton.runtime.interpreter import InterpretedFunction

    from tools.aot import kernels_in

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
        for config in [
            (16, 32, 16, 4, True),  # the L2 norm in the epilogue
            (16, 16, 16, 4, False),  # the row-norm launch
            (16, 16, 16, 4, False, 3),
        ]:  # split-K: partials and their epilogue
            _close(m.fused_projection_triton(xs, ws, bias, "relu", True, config=config), expected)


def _bilinear_cases(m):
    g = torch.Generator().manual_seed(1)
    b, k1, k2, o = 17, 19, 21, 35  # tails in B, both K (16-wide blocks) and O (64-wide)
    x, y, w, bias = _rand(g, b, k1), _rand(g, b, k2), _rand(g, o, k1, k2, scale=0.1), _rand(g, o)
    _close(
        m.bilinear_triton(x, y, w, bias),
        torch.nn.functional.bilinear(x.double(), y.double(), w.double(), bias.double()),
    )


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


def run_cases(name: str, module) -> list[str]:
    """Each of module ``name``'s cases run on ``module``: 'pass', 'OutOfBounds' or 'Race' (the
    guard, when it is on), or 'wrong: <why>' (off the reference). Any other error raises."""
    from triton.runtime.errors import InterpreterError

    outcomes = []
    for case in CASES[name]:
        try:
            case(module)
            outcomes.append("pass")
        except InterpreterError as e:
            caught = next((kind for kind in ("OutOfBounds", "Race") if kind in str(e)), None)
            if caught is None:
                raise  # the mutant broke some other way
            outcomes.append(caught)
        except AssertionError as e:
            outcomes.append(f"wrong: {(str(e).splitlines() or ['a bare assert'])[0]}")
    return outcomes
