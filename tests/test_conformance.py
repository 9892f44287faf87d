"""Conformance: cypool against PyTorch 2.13 CPU and against cypool.reference.

PyTorch (NCHW, contiguous) is the oracle wherever it has the operation.
cypool sums every window sequentially in row-major order and divides by
each bin extent in turn (``sum/kd/kh/kw``), which is exactly what PyTorch's
contiguous CPU kernels do, so forward average pooling, both backwards and
max pooling are asserted bit-identical to it, in both of cypool's layouts
(checked empirically on torch 2.13.0+cpu).  The one exception: PyTorch
computes ``adaptive_avg_pool`` to an all-ones output with ``mean()`` (its
vectorised reduction order), and differentiates that as a mean, so there a
tolerance applies.

Where PyTorch has nothing (integer and bool max pooling, float16 rules,
global pooling indices), the slow NumPy reference ``cypool.reference`` is
the oracle.
"""
from __future__ import annotations

import numpy as np
import pytest

import cypool
from cypool import reference

torch = pytest.importorskip("torch")
F = torch.nn.functional

# the reference sums windows holding +inf and -inf (giving NaN, as cypool does)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["NC", "NL"])


def _all_ones(case) -> bool:
    return all(o == 1 for o in case.out_spatial())


def _torch_grads(op, x, case, channels_last, tools, rng):
    """PyTorch autograd on ``x`` (cypool's layout): (values, indices or None,
    random grad_output, grad_input), all in cypool's layout."""
    xt = tools.to_torch(x, case.rank, channels_last).requires_grad_()
    f = getattr(F, f"adaptive_{op}_pool{case.rank}d")
    if op == "max":
        y, ti = f(xt, case.torch_output_size, return_indices=True)
    else:
        y, ti = f(xt, case.torch_output_size), None
    g = rng.standard_normal(tuple(y.shape)).astype(x.dtype.newbyteorder("="))
    y.backward(torch.from_numpy(g))
    back = [tools.from_torch(t, case.rank, channels_last) if t is not None else None
            for t in (y, ti, torch.from_numpy(g), xt.grad)]
    return back


# ---------------------------------------------------------------------------
# Forward and backward against PyTorch (autograd)
# ---------------------------------------------------------------------------

@LAYOUTS
def test_adaptive_avg_forward_vs_torch(case, channels_last, tools):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    got = tools.fn("adaptive_avg", case.rank)(x, case.output_size, channels_last=channels_last)
    want = tools.from_torch(getattr(F, f"adaptive_avg_pool{case.rank}d")(
        tools.to_torch(x, case.rank, channels_last), case.torch_output_size),
        case.rank, channels_last)
    assert got.dtype == want.dtype
    if _all_ones(case):   # torch uses mean(): another summation order
        tools.assert_close(got, want)
    else:
        tools.assert_identical(got, want)


@LAYOUTS
def test_adaptive_max_forward_vs_torch(case, channels_last, tools):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    f = tools.fn("adaptive_max", case.rank)
    values, indices = f(x, case.output_size, return_indices=True, channels_last=channels_last)
    plain = f(x, case.output_size, channels_last=channels_last)
    tv, ti = getattr(F, f"adaptive_max_pool{case.rank}d")(
        tools.to_torch(x, case.rank, channels_last), case.torch_output_size,
        return_indices=True)
    tools.assert_identical(values, tools.from_torch(tv, case.rank, channels_last))
    tools.assert_identical(indices, tools.from_torch(ti, case.rank, channels_last))
    tools.assert_identical(plain, values)


@LAYOUTS
def test_adaptive_avg_backward_vs_torch(case, channels_last, tools, rng):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    _, _, g, want = _torch_grads("avg", x, case, channels_last, tools, rng)
    got = tools.fn("adaptive_avg_backward", case.rank)(g, x.shape, channels_last=channels_last)
    assert got.shape == x.shape
    if _all_ones(case):   # torch differentiates mean(): one division, not kd/kh/kw
        tools.assert_close(got, want)
    else:
        tools.assert_identical(got, want)


@LAYOUTS
def test_adaptive_max_backward_vs_torch(case, channels_last, tools, rng):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    _, ti, g, want = _torch_grads("max", x, case, channels_last, tools, rng)
    _, idx = tools.fn("adaptive_max", case.rank)(x, case.output_size, return_indices=True,
                                                 channels_last=channels_last)
    tools.assert_identical(idx, ti)
    got = tools.fn("adaptive_max_backward", case.rank)(g, idx, x.shape,
                                                       channels_last=channels_last)
    assert got.shape == x.shape
    tools.assert_identical(got, want)


def _sweep():
    """Random configurations: sizes up to a few dozen, channel counts around
    cypool's 16-lane blocks, NaN and ties, random thread counts."""
    rng = np.random.default_rng(7)
    out = []
    while len(out) < 120:
        rank = int(rng.integers(1, 4))
        sp = tuple(int(s) for s in rng.integers(1, {1: 50, 2: 16, 3: 8}[rank], rank))
        osize = tuple(max(1, int(s * rng.uniform(0.1, 2.2))) for s in sp)
        if all(o == 1 for o in osize):
            continue
        out.append((rank, int(rng.integers(0, 3)), int(rng.choice([1, 3, 16, 17, 33, 40, 65])), sp,
                    osize, bool(rng.integers(0, 2)), [np.float32, np.float64][len(out) % 2],
                    int(rng.integers(1, 5)), int(rng.integers(0, 2**31))))
    return out


@pytest.mark.parametrize("rank,n,c,sp,osize,channels_last,dtype,threads,seed", _sweep(),
                         ids=lambda v: None)
def test_random_sweep_vs_torch(rank, n, c, sp, osize, channels_last, dtype, threads, seed,
                               tools):
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal((n, c) + sp) * 3).astype(dtype)
    x[rng.random(x.shape) < 0.02] = np.nan
    x = tools.to_layout(x, rank, channels_last)
    before = cypool.get_num_threads()
    cypool.set_num_threads(threads)
    try:
        kw = dict(channels_last=channels_last)
        avg = tools.fn("adaptive_avg", rank)(x, osize, **kw)
        v, i = tools.fn("adaptive_max", rank)(x, osize, return_indices=True, **kw)
        g = rng.standard_normal(v.shape).astype(dtype)
        ga = tools.fn("adaptive_avg_backward", rank)(g, x.shape, **kw)
        gm = tools.fn("adaptive_max_backward", rank)(g, i, x.shape, **kw)
    finally:
        cypool.set_num_threads(before)
    gt = tools.to_torch(g, rank, channels_last)
    for op, got_y, got_g in (("avg", avg, ga), ("max", v, gm)):
        xt = tools.to_torch(x, rank, channels_last).requires_grad_()
        f = getattr(F, f"adaptive_{op}_pool{rank}d")
        y = f(xt, osize, return_indices=True) if op == "max" else (f(xt, osize), None)
        y[0].backward(gt)
        tools.assert_identical(got_y, tools.from_torch(y[0], rank, channels_last))
        tools.assert_identical(got_g, tools.from_torch(xt.grad, rank, channels_last))
        if op == "max":
            tools.assert_identical(i, tools.from_torch(y[1], rank, channels_last))


# ---------------------------------------------------------------------------
# Against the slow NumPy reference
# ---------------------------------------------------------------------------

@LAYOUTS
def test_adaptive_forward_vs_reference(case, channels_last, tools):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    kw = dict(rank=case.rank, channels_last=channels_last)
    avg = tools.fn("adaptive_avg", case.rank)(x, case.output_size, channels_last=channels_last)
    ref = reference.adaptive_pool(x, case.output_size, "avg", **kw)
    assert avg.dtype == ref.dtype == x.dtype.newbyteorder("=")
    tools.assert_close(avg, ref)

    v, i = tools.fn("adaptive_max", case.rank)(x, case.output_size, return_indices=True,
                                               channels_last=channels_last)
    rv, ri = reference.adaptive_pool(x, case.output_size, "max", return_indices=True, **kw)
    tools.assert_identical(v, rv)
    tools.assert_identical(i, ri)


@LAYOUTS
def test_adaptive_backward_vs_reference(case, channels_last, tools, rng):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    kw = dict(rank=case.rank, channels_last=channels_last)
    v, idx = tools.fn("adaptive_max", case.rank)(x, case.output_size, return_indices=True,
                                                 channels_last=channels_last)
    g = rng.standard_normal(v.shape).astype(v.dtype)
    got = tools.fn("adaptive_avg_backward", case.rank)(g, x.shape, channels_last=channels_last)
    tools.assert_close(got, reference.adaptive_pool_backward(g, x.shape, "avg", **kw))
    got = tools.fn("adaptive_max_backward", case.rank)(g, idx, x.shape,
                                                       channels_last=channels_last)
    want = reference.adaptive_pool_backward(g, x.shape, "max", indices=idx, **kw)
    tools.assert_close(got, want)
    assert got.dtype == g.dtype


@LAYOUTS
def test_integer_max_vs_reference(int_case, channels_last, tools):
    case = int_case
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    v, i = tools.fn("adaptive_max", case.rank)(x, case.output_size, return_indices=True,
                                               channels_last=channels_last)
    rv, ri = reference.adaptive_pool(x, case.output_size, "max", rank=case.rank,
                                     channels_last=channels_last, return_indices=True)
    assert v.dtype == x.dtype.newbyteorder("=")      # native, same kind
    tools.assert_identical(v, rv)
    tools.assert_identical(i, ri)
    # and max pooling is exact: the same as pooling the values as float64
    # (integers up to 2**53 are exact there; wider ones only checked above)
    if x.dtype.itemsize < 8:
        fv, fi = tools.fn("adaptive_max", case.rank)(x.astype(np.float64), case.output_size,
                                                     return_indices=True,
                                                     channels_last=channels_last)
        tools.assert_identical(v.astype(np.float64), fv)
        tools.assert_identical(i, fi)


@LAYOUTS
def test_integer_avg_returns_float64(int_case, channels_last, tools):
    case = int_case
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    got = tools.fn("adaptive_avg", case.rank)(x, case.output_size, channels_last=channels_last)
    assert got.dtype == np.float64
    # the same arithmetic as pooling the float64 conversion: bit-identical
    want = tools.fn("adaptive_avg", case.rank)(x.astype(np.float64), case.output_size,
                                               channels_last=channels_last)
    tools.assert_identical(got, want)
    ref = reference.adaptive_pool(x, case.output_size, "avg", rank=case.rank,
                                  channels_last=channels_last)
    assert ref.dtype == np.float64
    # huge int64/uint64 values lose digits in float64 either way: relative tolerance
    tools.assert_close(got, ref, scale=float(np.max(np.abs(x.astype(np.float64)), initial=1)))


@LAYOUTS
def test_float16(half_case, channels_last, tools, rng):
    """float16 is accumulated in float32 and rounded once to float16.

    So the float16 result is exactly cypool's float32 computation cast to
    float16 (asserted bit for bit).  Against the reference (float64 sums,
    rounded once to float16) the float32 roundoff, ~2**-24 relative per
    term, can push a value across a float16 rounding boundary: at most one
    float16 ulp (2**-10 relative, < rtol 1e-3); the atol, scaled by the
    largest |x|, covers means that cancel to about zero.
    """
    case = half_case
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    x32 = x.astype(np.float32)
    kw = dict(channels_last=channels_last)
    finite = np.abs(x[np.isfinite(x)].astype(np.float64))
    scale = max(1.0, float(finite.max(initial=0)))

    avg = tools.fn("adaptive_avg", case.rank)(x, case.output_size, **kw)
    assert avg.dtype == np.float16
    tools.assert_identical(avg, tools.fn("adaptive_avg", case.rank)(x32, case.output_size, **kw)
                           .astype(np.float16))
    ref = reference.adaptive_pool(x, case.output_size, "avg", rank=case.rank, **kw)
    assert ref.dtype == np.float16
    tools.assert_close(avg, ref, scale=scale)

    v, i = tools.fn("adaptive_max", case.rank)(x, case.output_size, return_indices=True, **kw)
    assert v.dtype == np.float16
    rv, ri = reference.adaptive_pool(x, case.output_size, "max", rank=case.rank,
                                     return_indices=True, **kw)
    tools.assert_identical(v, rv)
    tools.assert_identical(i, ri)

    g = rng.standard_normal(v.shape).astype(np.float16)
    g32 = g.astype(np.float32)
    for kind, args in (("adaptive_avg_backward", ()), ("adaptive_max_backward", (i,))):
        got = tools.fn(kind, case.rank)(g, *args, x.shape, **kw)
        assert got.dtype == np.float16 and got.shape == x.shape
        tools.assert_identical(got, tools.fn(kind, case.rank)(g32, *args, x.shape, **kw)
                               .astype(np.float16))


def test_float16_avg_accumulates_in_float32(tools):
    """2048 ones + one 1.0 summed in float16 would stick at 2048; in float32 it is exact."""
    x = np.ones((1, 1, 4097), np.float16)
    x[0, 0, -1] = 2.0
    got = cypool.adaptive_avg_pool1d(x * np.float16(1024), 1)
    # true mean 1024 * 4098/4097 rounds to 1024.0 or 1024.5 in float16
    want = np.float16(1024 * 4098 / 4097)
    assert got.dtype == np.float16
    assert got[0, 0, 0] == want
    # torch agrees (its CPU kernel also accumulates half in float)
    t = F.adaptive_avg_pool1d(torch.from_numpy(x * np.float16(1024)), 1).numpy()
    assert t[0, 0, 0] == want


# ---------------------------------------------------------------------------
# Global pooling
# ---------------------------------------------------------------------------

@LAYOUTS
@pytest.mark.parametrize("keepdims", [True, False])
def test_global_vs_reference(case, channels_last, keepdims, tools):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    kw = dict(channels_last=channels_last, keepdims=keepdims)
    avg = tools.fn("global_avg", case.rank)(x, **kw)
    ref = reference.global_pool(x, "avg", case.rank, **kw)
    tools.assert_close(avg, ref)
    mx, idx = tools.fn("global_max", case.rank)(x, return_indices=True, **kw)
    tools.assert_identical(mx, reference.global_pool(x, "max", case.rank, **kw))
    _, ri = reference.adaptive_pool(x, 1, "max", rank=case.rank, return_indices=True,
                                    channels_last=channels_last)
    tools.assert_identical(idx, ri.reshape(idx.shape))
    # global pooling is adaptive pooling to 1, bit for bit
    tools.assert_identical(avg.reshape(-1),
                           tools.fn("adaptive_avg", case.rank)(x, 1, channels_last=channels_last)
                           .reshape(-1))


@LAYOUTS
def test_global_vs_torch(case, channels_last, tools):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    dims = tuple(range(-case.rank, 0))
    xt = tools.to_torch(x, case.rank, channels_last)

    def back(t):
        return tools.from_torch(t, case.rank, channels_last)

    avg = tools.fn("global_avg", case.rank)(x, channels_last=channels_last)
    tools.assert_close(avg, back(xt.mean(dim=dims, keepdim=True)))
    mx, idx = tools.fn("global_max", case.rank)(x, return_indices=True,
                                                channels_last=channels_last)
    # amax picks among -0.0/+0.0 its own way: equal values, sign not compared
    np.testing.assert_array_equal(mx, back(xt.amax(dim=dims, keepdim=True)), strict=True)
    tv, ti = getattr(F, f"adaptive_max_pool{case.rank}d")(xt, 1, return_indices=True)
    tools.assert_identical(mx, back(tv))
    tools.assert_identical(idx, back(ti))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.bool_, np.float16])
def test_global_other_dtypes(rank, dtype, tools, rng):
    x = (rng.integers(0, 5, (2, 3) + (4,) * rank)).astype(dtype)
    mx, idx = tools.fn("global_max", rank)(x, return_indices=True, keepdims=False)
    assert mx.dtype == np.dtype(dtype) and idx.dtype == np.int64
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(mx, flat.max(axis=-1), strict=True)
    np.testing.assert_array_equal(idx, np.argmax(flat, axis=-1))
    avg = tools.fn("global_avg", rank)(x, keepdims=False)
    want_dtype = np.float16 if dtype == np.float16 else np.float64
    assert avg.dtype == want_dtype
    tools.assert_close(avg, flat.astype(np.float64).mean(axis=-1), dtype=want_dtype)


# ---------------------------------------------------------------------------
# Hand-checked values (PyTorch semantics spelled out)
# ---------------------------------------------------------------------------

def test_nan_index_is_last_nan_and_ties_first():
    x = np.array([[1, np.nan, 5, np.nan, 2, 2, np.inf, np.nan, 3, 3, 3, 0]], np.float32)
    v, i = cypool.adaptive_max_pool1d(x, 4, return_indices=True)
    # bins [0,3) [3,6) [6,9) [9,12)
    np.testing.assert_array_equal(i, [[1, 3, 7, 9]])
    assert np.isnan(v[0, :3]).all() and v[0, 3] == 3
    tv, ti = F.adaptive_max_pool1d(torch.from_numpy(x), 4, return_indices=True)
    np.testing.assert_array_equal(i, ti.numpy())


def test_adaptive_bins_overlap_and_upsample():
    x = np.array([[3.0, 1.0, 2.0]])
    v, i = cypool.adaptive_max_pool1d(x, 5, return_indices=True)
    np.testing.assert_array_equal(v, [[3, 3, 1, 2, 2]])
    np.testing.assert_array_equal(i, [[0, 0, 1, 2, 2]])
    # 5 -> 3: bins [0,2) [1,4) [3,5)
    a = cypool.adaptive_avg_pool1d(np.arange(5.0)[None], 3)
    np.testing.assert_array_equal(a, [[0.5, 2.0, 3.5]])
    assert reference.adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]
    assert reference.adaptive_bins(10, 4) == [(0, 3), (2, 5), (5, 8), (7, 10)]


def test_signed_zero_tie_keeps_first():
    x = np.array([[-0.0, 0.0, 0.0, -0.0]])
    v, i = cypool.adaptive_max_pool1d(x, 2, return_indices=True)
    np.testing.assert_array_equal(i, [[0, 2]])
    assert np.signbit(v[0, 0]) and not np.signbit(v[0, 1])


def test_max_backward_overlapping_bins_accumulate():
    # 4 -> 3: bins [0,2) [1,3) [2,4); element 1 (=5) wins the first two
    x = np.array([[1.0, 5.0, 2.0, 0.0]])
    _, idx = cypool.adaptive_max_pool1d(x, 3, return_indices=True)
    np.testing.assert_array_equal(idx, [[1, 1, 2]])
    g = cypool.adaptive_max_pool1d_backward(np.array([[10.0, 100.0, 1000.0]]), idx, x.shape)
    np.testing.assert_array_equal(g, [[0.0, 110.0, 1000.0, 0.0]])


def test_output_size_zero_gives_empty(tools):
    x = np.ones((2, 3, 4, 5), np.float32)
    assert cypool.adaptive_avg_pool2d(x, (0, 2)).shape == (2, 3, 0, 2)
    v, i = cypool.adaptive_max_pool2d(x, 0, return_indices=True)
    assert v.shape == i.shape == (2, 3, 0, 0) and i.dtype == np.int64
    assert F.adaptive_avg_pool2d(torch.from_numpy(x), (0, 2)).shape == (2, 3, 0, 2)


def test_list_input_and_result_kind():
    got = cypool.adaptive_avg_pool1d([[1.0, 2.0, 3.0, 4.0]], 2)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, [[1.5, 3.5]])


@pytest.mark.parametrize("rank", [1, 2])
def test_bins_exact_beyond_float32_precision(rank):
    """Bins are integer-exact for extents above 2**24, where a float32 bin
    formula (PyTorch before #84010) goes wrong.  arange input: each bin's max
    is its last element and its mean is (start + end - 1) / 2."""
    size, osize = 2**24 + 3, 999_983
    x = np.arange(size, dtype=np.int32).reshape((1,) + (size,) + (1,) * (rank - 1))
    out = (osize,) + (1,) * (rank - 1)
    f_max = getattr(cypool, f"adaptive_max_pool{rank}d")
    f_avg = getattr(cypool, f"adaptive_avg_pool{rank}d")
    v, i = f_max(x, out, return_indices=True)
    o = np.arange(osize, dtype=np.int64)
    start, end = (o * size) // osize, ((o + 1) * size + osize - 1) // osize
    np.testing.assert_array_equal(i.reshape(-1), end - 1)
    np.testing.assert_array_equal(v.reshape(-1), end - 1)
    np.testing.assert_array_equal(f_avg(x, out).reshape(-1), (start + end - 1) / 2)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True], ids=["NC", "NL"])
def test_zero_channels(rank, channels_last, tools):
    """C = 0 gives empty results of the right shapes (PyTorch's 1d/2d adaptive
    average pooling allows it too; its 3d one refuses)."""
    x = tools.to_layout(np.ones((2, 0) + (4,) * rank, np.float32), rank, channels_last)
    kw = dict(channels_last=channels_last)
    want = tools.to_layout(np.ones((2, 0) + (2,) * rank, np.float32), rank, channels_last)
    avg = tools.fn("adaptive_avg", rank)(x, 2, **kw)
    v, i = tools.fn("adaptive_max", rank)(x, 2, return_indices=True, **kw)
    assert avg.shape == v.shape == i.shape == want.shape
    assert tools.fn("adaptive_avg_backward", rank)(want, x.shape, **kw).shape == x.shape
    assert tools.fn("adaptive_max_backward", rank)(want, i, x.shape, **kw).shape == x.shape
    assert tools.fn("global_avg", rank)(x, keepdims=False, **kw).shape == (2, 0)
    if rank < 3:
        t = getattr(F, f"adaptive_avg_pool{rank}d")(torch.ones((2, 0) + (4,) * rank), 2)
        assert tools.from_torch(t, rank, channels_last).shape == avg.shape
