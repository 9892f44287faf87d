"""Fixed-window pooling: thread-count invariance, out=, and 64-bit indexing."""
from __future__ import annotations

import numpy as np
import pytest

import cypool
from cypool import _cpu, reference

# (rank, channels-first shape, kwargs): shapes that take each kernel path --
# the row sweep (wide planes, few planes), transposed plane lanes (many
# planes), and channels-last lanes with and without channel blocking.
CASES = [
    (1, (3, 5, 40), dict(kernel_size=3, stride=2, padding=1)),
    (2, (2, 3, 31, 29), dict(kernel_size=3, stride=2, padding=1)),
    (2, (2, 40, 12, 11), dict(kernel_size=2, stride=2)),
    (2, (1, 70, 9, 9), dict(kernel_size=3, stride=1, padding=1)),
    (2, (1, 64, 10, 10), dict(kernel_size=(3, 2), stride=(2, 1), padding=((0, 1), (1, 0)))),
    (3, (2, 20, 6, 5, 7), dict(kernel_size=2, stride=(1, 2, 2), padding="same")),
]


def _run_all(rank, x, kw, cl):
    avg = getattr(cypool, f"avg_pool{rank}d")
    mx = getattr(cypool, f"max_pool{rank}d")
    a = avg(x, **kw, channels_last=cl)
    a2 = avg(x, **kw, count_include_pad=False, dilation=2 if rank > 1 else 1, channels_last=cl) \
        if "padding" not in kw or not isinstance(kw["padding"], str) else a
    v, i = mx(x, **kw, return_indices=True, channels_last=cl)
    g = np.linspace(-1, 1, a.size).reshape(a.shape).astype(x.dtype)
    ga = getattr(cypool, f"avg_pool{rank}d_backward")(g, x.shape, **kw, channels_last=cl)
    gm = getattr(cypool, f"max_pool{rank}d_backward")(g, i, x.shape, **kw, channels_last=cl)
    return [a, a2, v, i, ga, gm]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rank,shape,kw", CASES)
def test_fixed_thread_count_invariance(rank, shape, kw, channels_last, monkeypatch):
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)   # small arrays: use the threads anyway
    before = cypool.get_num_threads()
    rng = np.random.default_rng(7)
    x = np.round(rng.standard_normal(shape) * 2).astype(np.float32)   # many ties
    x[rng.random(shape) < 0.05] = np.nan
    if channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    try:
        results = {}
        for n in (1, 2, 3):
            cypool.set_num_threads(n)
            results[n] = [r.tobytes() for r in _run_all(rank, x, kw, channels_last)]
    finally:
        cypool.set_num_threads(before)
    assert results[1] == results[2] == results[3]


@pytest.mark.parametrize("channels_last", [False, True])
def test_fixed_out_arguments(channels_last):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    if channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    kw = dict(kernel_size=3, stride=2, padding=1, channels_last=channels_last)
    want = cypool.avg_pool2d(x, **kw)
    out = np.full(want.shape, 7, np.float32)
    assert cypool.avg_pool2d(x, **kw, out=out) is out
    np.testing.assert_array_equal(out, want)

    v, i = cypool.max_pool2d(x, **kw, return_indices=True)
    big = np.zeros(v.shape + (2,), np.float32)          # non-contiguous out
    ov, oi = big[..., 0], np.zeros(i.shape, np.int64)
    rv, ri = cypool.max_pool2d(x, **kw, return_indices=True, out=(ov, oi))
    assert rv is ov and ri is oi
    np.testing.assert_array_equal(ov, v)
    np.testing.assert_array_equal(oi, i)

    g = np.ones(v.shape, np.float32)
    gout = np.empty(x.shape, np.float32)
    assert cypool.max_pool2d_backward(g, i, x.shape, **kw, out=gout) is gout
    np.testing.assert_array_equal(gout, cypool.max_pool2d_backward(g, i, x.shape, **kw))
    with pytest.raises(ValueError, match="out"):
        cypool.avg_pool2d(x, **kw, out=np.empty((1,), np.float32))


def test_fixed_input_never_modified():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 7))
    x.setflags(write=False)
    copy = x.copy()
    cypool.max_pool2d(x, 2, return_indices=True)
    cypool.avg_pool2d(x[:, :, ::-1, ::2], 2, padding=((1, 0), (0, 1)))
    np.testing.assert_array_equal(x, copy)


def test_past_2_to_the_31_elements():
    """Offsets past 2**31 elements (uint8, one plane of 2**31 + 2**16 bytes)."""
    h, w = 2 ** 15 + 1, 2 ** 16
    try:
        x = np.zeros((1, h, w), dtype=np.uint8)
    except MemoryError:
        pytest.skip("not enough memory for a 2 GiB array")
    assert x.size > 2 ** 31
    x[0, -1, -1] = 9                       # the last element, at offset > 2**31
    x[0, -2, -1] = 5                       # in the last window of the k=2 pool
    v, i = cypool.max_pool2d(x, 2, return_indices=True)
    assert v.shape == (1, h // 2, w // 2)
    assert v[0, -1, -1] == 5 and i[0, -1, -1] == (h - 2) * w + (w - 1)
    g = cypool.adaptive_max_pool2d(x, 1, return_indices=True)
    assert g[0][0, 0, 0] == 9 and g[1][0, 0, 0] == h * w - 1
    del x


def test_all_padding_reference_agrees():
    """The documented all-padding answer (lowest value, index -1) is the reference's too."""
    x = np.array([[5.0]])
    v, i = cypool.max_pool1d(x, 2, padding=((1, 1),), dilation=2, return_indices=True)
    rv, ri = reference.fixed_pool(x, 2, "max", 1, padding=((1, 1),), dilation=2,
                                  return_indices=True)
    np.testing.assert_array_equal(v, rv)
    np.testing.assert_array_equal(i, ri)
    assert (i == -1).any()


def _fixed_order_sum(v: np.ndarray) -> np.ndarray:
    """cp_sum's documented order, in NumPy: partial sums i % P (P = 64 from 256
    values, else 16) added row by row, a pairwise tree, then the tail."""
    p = 64 if v.size >= 256 else 16
    m = v.size // p
    acc = np.zeros(p, v.dtype)
    for r in range(m):
        acc = acc + v[r * p:(r + 1) * p]
    while p > 1:
        p //= 2
        acc = acc[:p] + acc[p:2 * p]
    s = acc[0]
    for t in v[m * (64 if v.size >= 256 else 16):]:
        s = s + t
    return s


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw", [(1, 5), (7, 7), (15, 20), (37, 41)])
def test_global_average_channels_first_order(hw, dtype, monkeypatch):
    """Whole-plane averages of channels-first arrays use a vectorised sum in an
    order fixed by the plane size alone: same bits at any thread count and on
    any CPU, and within rounding of the float64 reference."""
    from cypool import _kernels

    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 5) + hw).astype(dtype)
    n = hw[0] * hw[1]
    try:
        for level in (0, 1, 2):         # each ISA level's version (AVX2, AVX-512)
            _kernels.limit_window_isa(level)
            y = cypool.global_avg_pool2d(x)
            for b, c in np.ndindex(3, 5):
                s = _fixed_order_sum(x[b, c].reshape(-1))
                assert y[b, c, 0, 0] == s / dtype(hw[0]) / dtype(hw[1]), (level, b, c, n)
    finally:
        _kernels.limit_window_isa(2)
    ref = reference.global_pool(x, "avg", 2)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    before = cypool.get_num_threads()
    try:
        cypool.set_num_threads(1)
        one = cypool.global_avg_pool2d(x).tobytes()
        cypool.set_num_threads(2)
        assert cypool.global_avg_pool2d(x).tobytes() == one
    finally:
        cypool.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 7, 65536, 65537, 300001])
def test_index_range_one_pass(n):
    """The parallel (min, max) used to validate indices agrees with NumPy,
    wherever the extremes sit (first, last, chunk edges)."""
    from cypool import _kernels

    rng = np.random.default_rng(n)
    a = rng.integers(0, 1000, n)
    for pos in {0, n - 1, min(65535, n - 1), n // 2}:
        b = a.copy()
        b[pos] = -5
        b[(pos + 1) % n] = 5000 if n > 1 else -5
        assert _kernels.index_range(b, 2) == (b.min(), b.max())
        assert _kernels.index_range(b, 1) == (b.min(), b.max())


@pytest.mark.parametrize("shape,kw", [
    ((1, 20, 37, 41), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 9, 30, 33), dict(kernel_size=2)),
    ((1, 17, 9, 10, 11), dict(kernel_size=2, stride=(1, 2, 2), padding=1)),
    ((3, 40, 6, 7), dict(kernel_size=(3, 1), stride=1, padding=(1, 0))),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_lanes_path_matches_torch(shape, kw, dtype):
    """Channels-first arrays with 16 or more planes take the transposed-lanes
    path (any plane size up to the scratch block, remainder lanes included);
    it must give torch's bits: values, indices and gradients."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rank = len(shape) - 2
    rng = np.random.default_rng(len(shape) * 100 + shape[1])
    x = np.round(rng.standard_normal(shape) * 3).astype(dtype)
    x[rng.random(shape) < 0.02] = np.nan
    t = torch.from_numpy(x)
    v, i = getattr(cypool, f"max_pool{rank}d")(x, **kw, return_indices=True)
    tv, ti = getattr(F, f"max_pool{rank}d")(t, **kw, return_indices=True)
    np.testing.assert_array_equal(v, tv.numpy())
    np.testing.assert_array_equal(i, ti.numpy())
    a = getattr(cypool, f"avg_pool{rank}d")(np.nan_to_num(x), **kw)
    ta = getattr(F, f"avg_pool{rank}d")(torch.from_numpy(np.nan_to_num(x)), **kw)
    np.testing.assert_array_equal(a, ta.numpy())
    g = rng.standard_normal(v.shape).astype(dtype)
    tt = t.clone().requires_grad_()
    getattr(F, f"max_pool{rank}d")(tt, **kw).backward(torch.from_numpy(g))
    gm = getattr(cypool, f"max_pool{rank}d_backward")(g, i, x.shape, **kw)
    np.testing.assert_array_equal(gm, tt.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int32])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape,kw", [
    ((2, 3, 31, 29), dict(kernel_size=3, stride=2, padding=1)),        # row sweep
    ((1, 40, 12, 11), dict(kernel_size=2)),                            # plane lanes
    ((2, 20, 9, 10), dict(kernel_size=(3, 2), stride=1, dilation=2)),
])
def test_max_values_only_path_equals_indexed_path(shape, kw, channels_last, dtype):
    """Without return_indices max pooling runs a values-only loop on every
    path; its values must be the indexed path's, NaN and ties included."""
    rng = np.random.default_rng(5)
    x = np.round(rng.standard_normal(shape) * 3)
    if np.dtype(dtype).kind == "f":
        x[rng.random(shape) < 0.05] = np.nan
    x = x.astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    v = cypool.max_pool2d(x, **kw, channels_last=channels_last)
    vi, _ = cypool.max_pool2d(x, **kw, channels_last=channels_last, return_indices=True)
    np.testing.assert_array_equal(v, vi)
    g = cypool.adaptive_max_pool2d(x, (4, 3), channels_last=channels_last)
    gi, _ = cypool.adaptive_max_pool2d(x, (4, 3), True, channels_last=channels_last)
    np.testing.assert_array_equal(g, gi)
