"""bilinear and MFB (Triton) against float64 references."""

import pytest
import torch
import torch.nn.functional as F

from edgefuse.kernels.reference import mfb_reference
from edgefuse.kernels.triton_bilinear import bilinear_triton, mfb_triton
from tests.conftest import KERNEL_DEVICE as DEV
from tests.kernels._tol import assert_close


def _rand(g, *shape, dtype, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).to(dtype).to(DEV)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b,k1,k2,o", [(1, 5, 7, 3), (3, 20, 33, 40), (17, 16, 9, 70)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bilinear_matches_torch(dtype, b, k1, k2, o, with_bias):
    g = torch.Generator().manual_seed(b + k1)
    x, y = _rand(g, b, k1, dtype=dtype), _rand(g, b, k2, dtype=dtype)
    w = _rand(g, o, k1, k2, dtype=dtype, scale=(k1 * k2) ** -0.5)
    bias = _rand(g, o, dtype=dtype) if with_bias else None
    out = bilinear_triton(x, y, w, bias)
    ref = F.bilinear(x.double(), y.double(), w.double(), None if bias is None else bias.double())
    assert_close(out, ref, dtype, k1 * k2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "b,k1,k2,o,factors",
    [(1, 5, 7, 3, 4), (3, 20, 33, 40, 3), (17, 16, 16, 300, 4), (5, 9, 10, 6, 1), (67, 9, 20, 12, 3)],
)
@pytest.mark.parametrize("normalize", [True, False])
def test_mfb_matches_reference(dtype, b, k1, k2, o, factors, normalize):
    g = torch.Generator().manual_seed(o + factors)
    x, y = _rand(g, b, k1, dtype=dtype), _rand(g, b, k2, dtype=dtype)
    u, v = (
        _rand(g, o * factors, k1, dtype=dtype, scale=k1**-0.5),
        _rand(g, o * factors, k2, dtype=dtype, scale=k2**-0.5),
    )
    ub, vb = _rand(g, o * factors, dtype=dtype), _rand(g, o * factors, dtype=dtype)
    out = mfb_triton(x, y, u, ub, v, vb, factors, None, normalize)
    ref = mfb_reference(
        x.double(), y.double(), u.double(), ub.double(), v.double(), vb.double(), factors, None, normalize
    )
    assert_close(out, ref, dtype, max(k1, k2) * factors)


@pytest.mark.parametrize("present", [[[True, True]] * 4, [[False, True], [True, False], [True, True], [False, True]]])
def test_mfb_absent_side_is_identity(present):
    g = torch.Generator().manual_seed(0)
    p = torch.tensor(present, device=DEV)
    x, y = _rand(g, 4, 6, dtype=torch.float32), _rand(g, 4, 10, dtype=torch.float32)
    u, v = _rand(g, 32, 6, dtype=torch.float32), _rand(g, 32, 10, dtype=torch.float32)
    ub, vb = _rand(g, 32, dtype=torch.float32), _rand(g, 32, dtype=torch.float32)
    out = mfb_triton(x, y, u, ub, v, vb, 4, p)
    ref = mfb_reference(x.double(), y.double(), u.double(), ub.double(), v.double(), vb.double(), 4, p)
    assert_close(out, ref, torch.float32, 40)


def test_launchers_reject_bad_inputs():
    x, y = torch.randn(3, 4, device=DEV), torch.randn(3, 5, device=DEV)
    with pytest.raises(ValueError, match=r"expected weight \[O, 4, 5\]"):
        bilinear_triton(x, y, torch.randn(2, 5, 4, device=DEV))
    with pytest.raises(ValueError, match="same B"):
        bilinear_triton(x, y[:2], torch.randn(2, 4, 5, device=DEV))
    with pytest.raises(ValueError, match=r"u_w \[O\*4, 4\]"):
        mfb_triton(x, y, torch.randn(8, 5, device=DEV), None, torch.randn(8, 5, device=DEV), None, 4)
    with pytest.raises(ValueError, match="present"):
        mfb_triton(
            x,
            y,
            torch.randn(8, 4, device=DEV),
            None,
            torch.randn(8, 5, device=DEV),
            None,
            4,
            torch.ones(3, 3, dtype=torch.bool, device=DEV),
        )


@pytest.mark.parametrize("block_o", [4, 16])
def test_mfb_fused_and_two_launch_normalisation_agree(block_o):
    g = torch.Generator().manual_seed(9)
    o, f = 12, 4  # block_o 16 >= O fuses the L2 norm; 4 splits O over 3 programs + a norm launch
    x, y = _rand(g, 3, 8, dtype=torch.float32), _rand(g, 3, 6, dtype=torch.float32)
    u, v = _rand(g, o * f, 8, dtype=torch.float32), _rand(g, o * f, 6, dtype=torch.float32)
    out = mfb_triton(x, y, u, None, v, None, f, None, True, config=(16, block_o, 32, 4))
    ref = mfb_reference(x.double(), y.double(), u.double(), None, v.double(), None, f, None, True)
    assert_close(out, ref, torch.float32, 32)
