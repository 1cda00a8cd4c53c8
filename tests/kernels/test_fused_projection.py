"""fused_projection (Triton) against the float64 reference: odd sizes, every activation, absent modalities."""

import pytest
import torch

from edgefuse.kernels.reference import fused_projection_reference
from edgefuse.kernels.triton_projection import _config, fused_projection_triton
from edgefuse.kernels.utils import DOT_MIN, GEMM_ROWS, MIN_PROGRAMS
from tests.conftest import KERNEL_DEVICE as DEV
from tests.kernels._tol import assert_close

WIDTHS = [5, 33, 130, 8, 17]  # K_i: none a power of two except 8


def _case(b, n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(b, WIDTHS[i], generator=g).to(dtype).to(DEV) for i in range(n)]
    ws = [(torch.randn(d, WIDTHS[i], generator=g) / WIDTHS[i] ** 0.5).to(dtype).to(DEV) for i in range(n)]
    bias = torch.randn(n, d, generator=g).to(dtype).to(DEV)
    return xs, ws, bias


def _ref(xs, ws, bias, act, normalize):
    d64 = lambda t: None if t is None else t.double()  # noqa: E731
    return fused_projection_reference([d64(x) for x in xs], [w.double() for w in ws], bias.double(), act, normalize)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b", [1, 3, 17])
@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("act,normalize", [("none", False), ("relu", True), ("gelu", False), ("tanh", True)])
def test_matches_reference(dtype, b, n, act, normalize):
    d = 24 if n != 2 else 70
    xs, ws, bias = _case(b, n, d, dtype, seed=b * 10 + n)
    out = fused_projection_triton(xs, ws, bias, act, normalize)
    assert out.shape == (b, n, d)
    assert_close(out, _ref(xs, ws, bias, act, normalize), dtype, max(WIDTHS[:n]))


@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_activations_keep_their_relative_precision_near_zero(act):
    """Pre-activations from 1e-30 up, both signs, through K = 1 (the output is act(x) itself),
    in float32: within 2 ulp of float64 relative to the value; and rows of small pre-activations
    L2-normalised, where a tanh taken as 2 sigmoid(2y) - 1 (1e-7 absolute, 1e-4 relative at
    1e-3) was 1e-4 off. (The fuzzer's ops layer found it: seed 2, case 3493.) tanh up to 100;
    GELU up to 1: below -1 its 1 + erf(x / sqrt 2) cancels, in PyTorch's float32 GELU too
    (1e3 ulp at -3), though the absolute error stays under 1e-7 |x|."""
    mag = torch.logspace(-30, 2 if act == "tanh" else 0, 400)
    x = torch.cat([mag, -mag, torch.tensor([0.0, 0.2499, 0.25, 0.2501])])[:, None].to(DEV)
    out = fused_projection_triton([x], [torch.ones(1, 1, device=DEV)], None, act, False)[:, 0, 0].double().cpu()
    ref = fused_projection_reference(
        [x.double()], [torch.ones(1, 1, dtype=torch.float64, device=DEV)], None, act, False
    )[:, 0, 0].cpu()
    ulps = (out - ref).abs() / (ref.abs() * torch.finfo(torch.float32).eps).clamp_min(torch.finfo(torch.float64).tiny)
    assert float(ulps.max()) <= 2.0, f"{act}: {float(ulps.max()):.3g} ulp at x = {float(x[int(ulps.argmax())]):.3g}"
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(9, 20, generator=g).to(DEV)]
    ws = [(torch.randn(6, 20, generator=g) * 1e-4).to(DEV)]  # pre-activations about 5e-4
    bias = torch.zeros(1, 6, device=DEV)
    assert_close(fused_projection_triton(xs, ws, bias, act, True), _ref(xs, ws, bias, act, True), torch.float32, 20)


@pytest.mark.parametrize("absent", [[0], [1, 3], [0, 1, 2, 3]])
def test_absent_modalities_give_zero_rows(absent):
    xs, ws, bias = _case(3, 5, 20, torch.float32, seed=7)
    xs = [None if i in absent else x for i, x in enumerate(xs)]
    out = fused_projection_triton(xs, ws, bias, "relu", True)
    assert torch.equal(out[:, absent], torch.zeros_like(out[:, absent]))
    assert_close(out, _ref(xs, ws, bias, "relu", True), torch.float32, 130)


def test_more_than_eight_modalities_and_wide_normalised_rows():
    g = torch.Generator().manual_seed(3)
    n, d = 10, 1100  # 10 > 8 groups per launch; D > 1024 takes the separate L2 kernel
    xs = [torch.randn(2, 6, generator=g).to(DEV) for _ in range(n)]
    ws = [torch.randn(d, 6, generator=g).to(DEV) for _ in range(n)]
    out = fused_projection_triton(xs, ws, None, "gelu", True)
    assert_close(
        out,
        fused_projection_reference([x.double() for x in xs], [w.double() for w in ws], None, "gelu", True),
        torch.float32,
        6,
    )


def test_configs_respect_the_tl_dot_minimum():
    for b in (1, 3, 17, 64, 4096):
        for d in (1, 5, 16, 70, 256, 1024, 4096):
            for normalize in (False, True):
                assert min(_config(b, d, normalize)[:3]) >= DOT_MIN


def test_launcher_rejects_bad_inputs():
    xs, ws, bias = _case(3, 2, 16, torch.float32)
    with pytest.raises(ValueError, match=r"input 1 must be \[B=3, K_1=33\]"):
        fused_projection_triton([xs[0], xs[1][:, :5].contiguous()], ws, bias)
    with pytest.raises(ValueError, match="contiguous"):
        fused_projection_triton([xs[0], torch.randn(33, 3, device=DEV).t()], ws, bias)
    with pytest.raises(ValueError, match="dtype torch.float16, expected torch.float32"):
        fused_projection_triton([xs[0], xs[1].half()], ws, bias)
    with pytest.raises(ValueError, match=r"bias must be \[N=2, D=16\]"):
        fused_projection_triton(xs, ws, bias[:1])
    with pytest.raises(ValueError, match="act must be one of"):
        fused_projection_triton(xs, ws, bias, act="swish")
    with pytest.raises(ValueError, match="all None"):
        fused_projection_triton([None, None], ws, bias)
    # the fast check hands each of these to the named one, which must raise
    with pytest.raises(ValueError, match=r"input 0 must be \[B, K_0\], got \[3\]"):
        fused_projection_triton([xs[0][:, 0].contiguous(), xs[1]], ws, bias)
    with pytest.raises(ValueError, match=r"weight 0 must be \[D, K_0\] with D >= 1, got \[16\]"):
        fused_projection_triton(xs, [ws[0][:, 0].contiguous(), ws[1]], bias)
    with pytest.raises(ValueError, match="weight 1 is on meta, expected"):
        fused_projection_triton(xs, [ws[0], ws[1].to("meta")], bias)
    with pytest.raises(ValueError, match="expected floating-point inputs, got torch.int32"):
        fused_projection_triton([x.int() for x in xs], ws, bias)
    with pytest.raises(ValueError, match="expected float32/float16/bfloat16 inputs, got torch.float64"):
        fused_projection_triton([x.double() for x in xs], [w.double() for w in ws], bias)
    with pytest.raises(ValueError, match="bias must be contiguous"):
        fused_projection_triton(xs, ws, bias.t().contiguous().t())


@pytest.mark.parametrize("fused", [True, False])
def test_fused_and_two_launch_normalisation_agree(fused):
    """The L2 norm in the epilogue (big grids) and the separate row-norm launch (edge batches)."""
    xs, ws, bias = _case(5, 3, 40, torch.float32, seed=4)
    cfg = (16, 64, 32, 4, True) if fused else (16, 16, 32, 4, False)
    out = fused_projection_triton(xs, ws, bias, "relu", True, config=cfg)
    assert_close(out, _ref(xs, ws, bias, "relu", True), torch.float32, 130)
    assert torch.allclose(out.norm(dim=-1), torch.ones(5, 3, dtype=torch.float32, device=out.device), atol=1e-5)


def test_edge_batches_spread_over_many_programs():
    # B <= 32, D = 1024, 3 modalities: a fused norm would be 3 programs; narrow tiles give 96
    bm, bn, bk, warps, fused = _config(8, 1024, True, 3)
    assert not fused and (1024 // bn) * 3 >= 64


def test_big_batches_fuse_the_norm_only_into_gemm_shaped_tiles():
    """Above GEMM_ROWS a tile that spans D = 256 is 64 rows tall and keeps the fused norm; one that
    spans D = 1024 would have to be 16 rows tall (re-reading the weights every 16 rows, without
    Hopper's warpgroup MMA: test_aot), so the norm is a second launch after 64-row tiles."""
    bm, bn, _, _, fused = _config(4096, 256, True, 3)
    assert (bm, bn, fused) == (64, 256, True)
    for b in (GEMM_ROWS + 1, 4096):
        bm, bn, _, _, fused = _config(b, 1024, True, 3)
        assert bm == 64 and not fused, b
    # while the fused tiles still give MIN_PROGRAMS programs (64-row tiles over 3 modalities)
    tiles = -(-MIN_PROGRAMS // 3)
    assert not _config(64 * (tiles - 1), 256, True, 3)[4] and _config(64 * tiles, 256, True, 3)[4]


def test_fused_tiles_keep_their_accumulator_small():
    for b in (1, 64, 4096):
        for d in (256, 1024):
            bm, bn, _, _, fused = _config(b, d, True, 3)
            assert bm * bn <= 64 * 256, (b, d, bm, bn)  # fp32 accumulator <= 64 KiB per program


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("split", [2, 3, 8])
@pytest.mark.parametrize("act,normalize", [("relu", True), ("gelu", False), ("tanh", True)])
def test_split_k_matches_reference(dtype, split, act, normalize):
    """K split over programs (edge batches): fp32 partials + an epilogue that sums them, adds the
    bias, applies the activation and the norm. 8 splits of 130 (9 K tiles of 16) leave empty shares."""
    xs, ws, bias = _case(3, 5, 40, dtype, seed=split)
    xs[3] = None  # an absent modality: zeros from the epilogue
    out = fused_projection_triton(xs, ws, bias, act, normalize, config=(16, 16, 16, 4, False, split))
    assert torch.equal(out[:, 3], torch.zeros_like(out[:, 3]))
    assert_close(out, _ref(xs, ws, bias, act, normalize), dtype, max(WIDTHS))


def test_split_k_over_more_than_eight_modalities():
    g = torch.Generator().manual_seed(5)
    n, d = 10, 24  # two launches of groups share one partials buffer
    xs = [torch.randn(2, 40, generator=g).to(DEV) for _ in range(n)]
    ws = [torch.randn(d, 40, generator=g).to(DEV) for _ in range(n)]
    bias = torch.randn(n, d, generator=g).to(DEV)
    out = fused_projection_triton(xs, ws, bias, "relu", True, config=(16, 16, 16, 4, False, 2))
    ref = fused_projection_reference([x.double() for x in xs], [w.double() for w in ws], bias.double(), "relu", True)
    assert_close(out, ref, torch.float32, 40)


def test_split_k_is_chosen_for_few_tiles_and_dropped_as_the_batch_grows():
    from edgefuse.kernels.triton_projection import SPLIT_TARGET, _plan

    ks = (2048, 1024, 128)  # the benchmark's modalities, fp16

    def plan(b, d):
        return _plan(b, d, 3, True, 2, None, max(ks), sum(ks))

    *_, programs, split = plan(1, 256)  # 8 tiles of 32 columns x 3 modalities
    assert split > 1 and programs * 3 * split >= SPLIT_TARGET
    # the partials' traffic caps it as B grows: split x B x 3 x 4 B per column <= 1/4 of 3200 x 2 B of weights
    assert plan(32, 256)[-1] == 4 and plan(32, 1024)[-1] == 4 and plan(64, 1024)[-1] == 2
    assert plan(4096, 1024)[-1] == 1 and plan(4096, 256)[-1] == 1
    # heuristic split in a real call (K = 300: 5 tiles of 64)
    g = torch.Generator().manual_seed(6)
    xs = [torch.randn(2, k, generator=g).to(DEV) for k in (300, 40)]
    ws = [torch.randn(24, k, generator=g).div(k**0.5).to(DEV) for k in (300, 40)]
    assert _plan(2, 24, 2, False, 4, None, 300, 340)[-1] == 2
    out = fused_projection_triton(xs, ws, None, "tanh", False)
    ref = fused_projection_reference([x.double() for x in xs], [w.double() for w in ws], None, "tanh", False)
    assert_close(out, ref, torch.float32, 300)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("act,normalize", [("none", False), ("relu", True), ("gelu", True), ("tanh", False)])
@pytest.mark.parametrize("absent", [[], [1]])
def test_training_through_the_kernel_gives_the_reference_gradients(act, normalize, absent, dtype, monkeypatch):
    """With gradients on, the op runs one projection launch (pre-activations) and torch's
    activation and norm; outputs and the gradients of inputs, weights and bias match float64.
    In float16 too, where an absent modality's zero row must not become 0/0 in the norm."""
    import edgefuse.kernels.triton_projection as tp
    from edgefuse.kernels import fused_projection

    monkeypatch.setenv("EDGEFUSE_KERNELS", "triton" if DEV == "cuda" else "interpret")
    launches = []
    real = tp.fused_projection_triton
    monkeypatch.setattr(tp, "fused_projection_triton", lambda *a, **k: launches.append(a[3:]) or real(*a, **k))
    xs, ws, bias = _case(5, 3, 24, dtype, seed=9)
    xs = [None if i in absent else x for i, x in enumerate(xs)]

    def run(xs, ws, bias, fn):
        leaves = (
            [None if x is None else x.clone().requires_grad_() for x in xs],
            [w.clone().requires_grad_() for w in ws],
        )
        b = bias.clone().requires_grad_()
        out = fn(leaves[0], leaves[1], b, act, normalize)
        grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
        params = [t for t in (*leaves[0], *leaves[1], b) if t is not None]
        return out, torch.autograd.grad(out, params, grad_out, allow_unused=True)

    out, grads = run(xs, ws, bias, fused_projection)
    assert launches == [("none", False)]  # the pre-activations, in one launch
    d64 = lambda t: None if t is None else t.double()  # noqa: E731
    ref, ref_grads = run([d64(x) for x in xs], [w.double() for w in ws], bias.double(), fused_projection_reference)
    assert_close(out.detach(), ref.detach(), dtype, 130)
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert (g is None) == (r is None), i  # an absent modality's weight gets no gradient on either path
        if g is not None:
            assert_close(g, r, dtype, 5 * 24)


def test_reference_normalises_a_zero_row_to_zeros_in_float16():
    """The CPU path of a float16 model: a row ReLU zeroed stays zero through the L2 norm (in
    float16, 1e-12 underflows to 0 and the norm would be 0/0), as the kernels' epilogue gives."""
    from edgefuse.kernels.reference import mfb_reference_pool

    x = torch.tensor([[1.0, 2.0], [-1.0, -3.0]], dtype=torch.float16)  # row 1: all negative
    w = torch.eye(2, dtype=torch.float16)
    out = fused_projection_reference([x, None], [w, w], None, "relu", True)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros_like(out[1])) and torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))
    torch.testing.assert_close(out[0, 0], torch.tensor([1.0, 2.0], dtype=torch.float16) / 5**0.5, atol=1e-3, rtol=0)
    pooled = mfb_reference_pool(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0]], dtype=torch.float16), 2)
    assert pooled.dtype == torch.float16 and torch.equal(pooled[0], torch.zeros(2, dtype=torch.float16))
    torch.testing.assert_close(pooled[1], torch.tensor([1.0, 0.0], dtype=torch.float16), atol=1e-3, rtol=0)
