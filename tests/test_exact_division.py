"""Float32 averages divide by exact reciprocals (cp_rdiv_row_f32 in
src/cypool_lanes.h): three fused operations in place of a division, giving
the IEEE quotient bit for bit for integer divisors up to 65535 while nothing
underflows or overflows, and a true division for every other lane.

tests/divcheck.c checks the reciprocal path against every significand of the
dividend for every odd divisor; here it runs over the small divisors (the
whole range, 1..65535, is `./divcheck 1 65535`, a few minutes), and the
library's own results on dividends in and out of that range are held to
PyTorch's bits at every instruction-set level."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cypool
from cypool import _kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


@pytest.fixture(scope="module")
def divcheck(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler to build tests/divcheck.c")
    exe = str(tmp_path_factory.mktemp("divcheck") / "divcheck")
    subprocess.run([CC, "-O2", "-w", "-I" + os.path.join(ROOT, "src"),
                    os.path.join(ROOT, "tests", "divcheck.c"), "-o", exe], check=True)
    return exe


@pytest.mark.parametrize("level, lo, hi", [(2, 1, 511), (1, 1, 255), (2, 0, 12), (1, 0, 12),
                                           (2, -1, 6)])
def test_reciprocal_division_is_exact_for_every_significand(divcheck, level, lo, hi):
    # lo = 0: the dividends outside the reciprocal path's range (subnormal,
    # tiny, huge, inf, NaN, -0.0), which must take the true division; lo =
    # -1: every significand where the quotient meets the subnormals, and at
    # the largest exponent (AVX-512 keeps the reciprocal path's quotient
    # wherever its first product is normal or +0)
    out = subprocess.run([divcheck, str(lo), str(hi), str(level)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "divisors failing: 0," in out.stdout
    vec = int(out.stdout.split("vector quotients:")[1])
    if lo == 1 and level == 2 and _kernels.limit_window_isa(2) >= 1:
        # where the CPU has the instructions, the vector path really ran
        assert vec == (hi + 1) // 2 * 2**23
    _kernels.limit_window_isa(2)


def _edge(rng, shape):
    # dividends in the reciprocal path's range and out of it, in the same
    # vectors: subnormal and tiny (below 2^-40), huge (above 2^100), sums
    # overflowing to inf, NaN, -0.0 and exact zeros
    x = rng.standard_normal(shape).astype(np.float32)
    scale = rng.choice(np.array([1, 1, 1, 1e-3, 1e-20, 1e-39, 1e-44, 1e31, 3e38],
                                dtype=np.float32), size=shape)
    with np.errstate(over="ignore"):
        x = x * scale
    flat = x.reshape(-1)
    flat[::23] = 0
    flat[7::41] = -0.0
    flat[3::97] = np.nan
    flat[5::89] = np.inf
    return x


def _same_bits(a, b):
    # bit for bit, except that a NaN matches any NaN (the sign and payload of
    # inf - inf in a backward's sums differ between summation orders)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    nan = np.isnan(a)
    assert np.array_equal(nan, np.isnan(b))
    assert a[~nan].tobytes() == b[~nan].tobytes()


CASES = [
    ("k3s1 per-column divisors", dict(kernel_size=3, stride=1, padding=1,
                                      count_include_pad=False), False),
    ("k3s1 counting the padding", dict(kernel_size=3, stride=1, padding=1), False),
    ("k2s2 row lanes", dict(kernel_size=2, stride=2), False),
    ("divisor_override", dict(kernel_size=3, stride=2, padding=1, divisor_override=7),
     False),
    ("row lanes divisor_override=-1", dict(kernel_size=2, stride=2, divisor_override=-1),
     False),
    ("channels-last divisor per output", dict(kernel_size=3, stride=2, padding=1,
                                              count_include_pad=False), True),
]


@pytest.mark.parametrize("width", [40, 150])
@pytest.mark.parametrize("level", [2, 1, 0])
@pytest.mark.parametrize("name, kw, cl", CASES, ids=[c[0] for c in CASES])
def test_averages_divide_as_torch_at_every_isa_level(level, name, kw, cl, width):
    # 150 columns: whole 64-output blocks (two rows at a time), 16-output
    # blocks and a scalar tail in one row
    rng = np.random.default_rng(level)
    x = _edge(rng, (17, 2, 12, width))                  # 17*2 planes
    t = torch.from_numpy(x).requires_grad_(True)
    ref = F.avg_pool2d(t, **kw)
    g = _edge(rng, tuple(ref.shape))
    ref.backward(torch.from_numpy(g))
    xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if cl else x
    gin = np.ascontiguousarray(g.transpose(0, 2, 3, 1)) if cl else g
    try:
        _kernels.limit_window_isa(level)
        y = cypool.avg_pool2d(xin, channels_last=cl, **kw)
        gi = cypool.avg_pool2d_backward(gin, xin.shape, channels_last=cl, **kw)
    finally:
        _kernels.limit_window_isa(2)
    if cl:
        y, gi = y.transpose(0, 3, 1, 2), gi.transpose(0, 3, 1, 2)
    _same_bits(y, ref.detach().numpy())
    _same_bits(gi, t.grad.numpy())


@pytest.mark.parametrize("level", [2, 0])
def test_adaptive_row_lanes_divide_as_torch(level):
    # three divisions in turn (by each extent), each by its reciprocal
    rng = np.random.default_rng(5)
    x = _edge(rng, (16, 3, 45, 37))
    try:
        _kernels.limit_window_isa(level)
        y = cypool.adaptive_avg_pool2d(x, (7, 5))
    finally:
        _kernels.limit_window_isa(2)
    ref = F.adaptive_avg_pool2d(torch.from_numpy(x), (7, 5))
    _same_bits(y, ref.numpy())
