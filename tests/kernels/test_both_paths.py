"""Both paths of each public op (the reference, the kernel) agree where the fuzzer's random cases
do not go: bad input is refused alike (kernels/checks.py: the reference path used to take what
torch's ops would take, so a call that ran on a CPU could fail on a GPU); an absent modality's
slot is never read, NaN there included; an empty batch gives empty outputs."""

import pytest
import torch

from edgefuse.kernels import ops, reference
from tests.conftest import KERNEL_DEVICE as DEV

# the kernel path on this machine: compiled on a GPU, interpreted elsewhere
KERNEL = "triton" if DEV == "cuda" else "interpret"


def _t(*shape, dtype=torch.float32):
    return torch.ones(*shape, dtype=dtype, device=DEV)


def _mask(*shape):
    return _t(*shape, dtype=torch.bool)


x, y, w = _t(3, 4), _t(3, 5), _t(6, 4)
# (op, arguments, what the error says): each of these the reference ops used to take or fail on
# with torch's own message
BAD = {
    "projection, unknown activation (the reference took it as none)": (
        "fused_projection",
        ([x], [w], None, "sigmoid"),
        "act must be one of ['gelu', 'none', 'relu', 'tanh'], got 'sigmoid'",
    ),
    "projection, a weight of another width": (
        "fused_projection",
        ([x, y], [w, _t(6, 4)], None, "none"),
        "input 1 must be [B=3, K_1=4], got [3, 5]",
    ),
    "projection, bias of another shape": (
        "fused_projection",
        ([x], [w], _t(6), "none"),
        "bias must be [N=1, D=6], got [6]",
    ),
    "projection, integer inputs": (
        "fused_projection",
        ([x.long()], [w.long()], None, "none"),
        "expected floating-point inputs, got torch.int64",
    ),
    "projection, a weight of another dtype (torch's RuntimeError on the reference)": (
        "fused_projection",
        ([x.half()], [w], None, "none"),
        "weight 0 has dtype torch.float32, expected torch.float16",
    ),
    "bilinear, weight of other widths": (
        "bilinear",
        (x, y, _t(2, 5, 4), None),
        "expected weight [O, 4, 5], got [2, 5, 4]",
    ),
    "bilinear, batches that differ": (
        "bilinear",
        (x, y[:2], _t(2, 4, 5), None),
        "with the same B, got [3, 4] and [2, 5]",
    ),
    "bilinear, a bias of another dtype": (
        "bilinear",
        (x, y, _t(2, 4, 5), _t(2).half()),
        "bias has dtype torch.float16, expected torch.float32",
    ),
    "mfb, a [B, 3] presence mask (the reference read its first two columns)": (
        "mfb",
        (x, y, w, None, _t(6, 5), None, 2, _mask(3, 3)),
        "expected present [B=3, 2] bool, got [3, 3] torch.bool",
    ),
    "mfb, a float presence mask": (
        "mfb",
        (x, y, w, None, _t(6, 5), None, 2, _t(3, 2)),
        "expected present [B=3, 2] bool, got [3, 2] torch.float32",
    ),
    "mfb, rows not a multiple of the factors": (
        "mfb",
        (x, y, w, None, _t(6, 5), None, 4, None),
        "expected u_w [O*4, 4] and v_w [O*4, 5], got [6, 4] and [6, 5]",
    ),
    "mfb, one bias": (
        "mfb",
        (x, y, w, _t(6), _t(6, 5), None, 2, None),
        "expected both biases [6] or neither, got [6] and None",
    ),
    "gated, a float mask": (
        "gated_fusion",
        (_t(3, 2, 5), _t(3, 2), _t(3, 2), "softmax"),
        "expected mask [3, 2] bool, got [3, 2] torch.float32",
    ),
    "gated, a mask of another shape": (
        "gated_fusion",
        (_t(3, 2, 5), _t(3, 2), _mask(3), "softmax"),
        "expected mask [3, 2] bool, got [3] torch.bool",
    ),
    "gated, an unknown mode (the reference took it as sigmoid)": (
        "gated_fusion",
        (_t(3, 2, 5), _t(3, 2), _mask(3, 2), "relu"),
        "mode must be 'softmax' or 'sigmoid', got 'relu'",
    ),
    "gated, logits of another shape": (
        "gated_fusion",
        (_t(3, 2, 5), _t(3, 5), _mask(3, 2), "softmax"),
        "expected logits [3, 2] or [3, 2, 5], got [3, 5]",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_both_paths_refuse_bad_input_with_the_same_error(case, monkeypatch):
    op, args, says = BAD[case]
    errors = {}
    for path in ("reference", KERNEL):
        monkeypatch.setenv("EDGEFUSE_KERNELS", path)
        with pytest.raises(ValueError) as e:
            getattr(ops, op)(*args)
        errors[path] = str(e.value)
    assert says in errors["reference"], errors
    assert errors["reference"] == errors[KERNEL]


def test_the_reference_path_still_takes_what_only_the_kernel_refuses(monkeypatch):
    """Float64 (a float64 model on a CPU) and non-contiguous tensors are for the kernel only."""
    monkeypatch.setenv("EDGEFUSE_KERNELS", "reference")
    out, empty = ops.gated_fusion(_t(3, 2, 5).double(), _t(3, 2).double(), _mask(3, 2))
    assert out.dtype == torch.float64 and not empty.any()
    assert ops.fused_projection([x.double()], [w.double()], None, "relu").shape == (3, 1, 6)
    assert ops.bilinear(x, _t(5, 3).t(), _t(2, 4, 5), None).shape == (3, 2)


@pytest.mark.parametrize("path", ["reference", KERNEL])
def test_both_paths_take_what_the_kernel_takes_in_mixed_dtypes(path, monkeypatch):
    """The projection's bias in another float dtype (the kernel reads it as float32; the reference
    raised torch's RuntimeError), gated fusion's logits in another float dtype."""
    monkeypatch.setenv("EDGEFUSE_KERNELS", path)
    g = torch.Generator().manual_seed(0)
    xs, ws, bias = torch.randn(3, 4, generator=g), torch.randn(6, 4, generator=g), torch.randn(1, 6, generator=g)
    out = ops.fused_projection([xs.half().to(DEV)], [ws.half().to(DEV)], bias.to(DEV), "relu", True)
    ref = reference.fused_projection_reference([xs.half().double()], [ws.half().double()], bias.double(), "relu", True)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double().cpu(), ref, rtol=2e-3, atol=2e-3)
    feats, logits = torch.randn(3, 2, 5, generator=g), torch.randn(3, 2, generator=g)
    out, _ = ops.gated_fusion(feats.half().to(DEV), logits.to(DEV), _mask(3, 2))
    assert out.dtype == torch.float16
    ref, _ = reference.gated_fusion_reference(feats.half().double(), logits.double(), _mask(3, 2).cpu())
    torch.testing.assert_close(out.double().cpu(), ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("per_feature", [False, True])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_an_absent_modalitys_slot_is_never_read_on_either_path(per_feature, mode, monkeypatch):
    """NaN, inf and -inf in absent modalities' features and logits (a dead sensor's slot) change
    nothing: the output and the gradients are those with zeros there. The reference multiplied
    them by a gate of 0, and 0 x NaN made the row NaN, where the kernel's masked loads skip them."""
    g = torch.Generator().manual_seed(0)
    b, n, d = 4, 3, 37
    feats, logits = torch.randn(b, n, d, generator=g), torch.randn(*((b, n, d) if per_feature else (b, n)), generator=g)
    mask = torch.tensor([[True, False, True], [False, True, False], [True, True, True], [False, False, True]])
    poison = torch.tensor([float("nan"), float("inf"), -float("inf")])
    bad_f, bad_l = feats.clone(), logits.clone()
    for i, (row, col) in enumerate((~mask).nonzero().tolist()):
        bad_f[row, col] = poison[i % 3]
        bad_l[row, col] = poison[(i + 1) % 3]
    dout = torch.randn(b, d, generator=g)
    results = {}
    for path in ("reference", KERNEL):
        monkeypatch.setenv("EDGEFUSE_KERNELS", path)
        for name, (f, lg) in {"clean": (feats, logits), "poisoned": (bad_f, bad_l)}.items():
            f, lg = f.to(DEV).requires_grad_(), lg.to(DEV).requires_grad_()
            out, empty = ops.gated_fusion(f, lg, mask.to(DEV), mode)
            df, dl = torch.autograd.grad(out, (f, lg), dout.to(DEV))
            results[path, name] = [t.detach().cpu() for t in (out, empty, df, dl)]
    for path in ("reference", KERNEL):
        clean, poisoned = results[path, "clean"], results[path, "poisoned"]
        for what, c, p in zip(("output", "empty flag", "d feats", "d logits"), clean, poisoned):
            assert torch.equal(c, p), f"{path}: the {what} changed with NaN/inf in absent slots"
    torch.testing.assert_close(results[KERNEL, "poisoned"][0], results["reference", "poisoned"][0])


@pytest.mark.parametrize("path", ["reference", KERNEL])
def test_an_empty_batch_gives_empty_outputs_on_either_path(path, monkeypatch):
    monkeypatch.setenv("EDGEFUSE_KERNELS", path)
    x0, y0 = _t(0, 4), _t(0, 5)
    assert ops.fused_projection([x0, None], [w, _t(6, 5)], None, "relu", True).shape == (0, 2, 6)
    assert ops.bilinear(x0, y0, _t(2, 4, 5), None).shape == (0, 2)
    assert ops.mfb(x0, y0, w, None, _t(6, 5), None, 2, _mask(0, 2)).shape == (
        0,
        3,
    )  # the reference's pooling failed here
    out, empty = ops.gated_fusion(_t(0, 2, 5), _t(0, 2), _mask(0, 2))
    assert out.shape == (0, 5) and empty.shape == (0,)
