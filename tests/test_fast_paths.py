"""The speed-only paths give the same bits as the plain ones.

The average backward writes runs of identical rows once and copies them,
streams large outputs with non-temporal stores and, channels-first, builds
whole planes in a buffer first; results come from a cache of large buffers.
Each of these must be invisible in the results: bit-identical to the plain
path and to PyTorch autograd, with no aliasing between live results.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import cypool
from cypool import _buffers, _cpu, _kernels

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_avg_grad(x, g, rank, adaptive, kw):
    t = torch.from_numpy(x).requires_grad_(True)
    if adaptive:
        y = getattr(F, f"adaptive_avg_pool{rank}d")(t, kw["output_size"])
    else:
        y = getattr(F, f"avg_pool{rank}d")(t, **kw)
    y.backward(torch.from_numpy(g))
    return t.grad.numpy()


def _cypool_grad(g, shape, rank, adaptive, kw, channels_last=False):
    if adaptive:
        return getattr(cypool, f"adaptive_avg_pool{rank}d_backward")(
            g, shape, channels_last=channels_last)
    return getattr(cypool, f"avg_pool{rank}d_backward")(g, shape, channels_last=channels_last,
                                                        **kw)


CASES = [
    # rank, NC-first shape, adaptive?, arguments
    (2, (3, 5, 23, 19), True, dict(output_size=(7, 5))),       # overlapping bins, runs of rows
    (2, (2, 8, 16, 16), True, dict(output_size=(4, 4))),       # exact bins
    (2, (1, 3, 9, 40), True, dict(output_size=(2, 40))),       # identity along W
    (2, (2, 64, 9, 20), True, dict(output_size=(4, 3))),       # channels-last rows of 5 KiB
    (1, (4, 6, 31), True, dict(output_size=9)),
    (3, (2, 6, 7, 9, 8), True, dict(output_size=(3, 4, 2))),   # runs in D and H
    (2, (2, 12, 14, 14), False, dict(kernel_size=2, stride=2)),
    (2, (2, 9, 13, 11), False, dict(kernel_size=3, stride=1, padding=1,
                                    count_include_pad=False)),
    (2, (1, 20, 12, 12), False, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (3, (1, 10, 6, 8, 8), False, dict(kernel_size=2, stride=2)),
    # stride 1 along W: the shifted-add gather
    (2, (2, 3, 9, 13), False, dict(kernel_size=3, stride=1, padding=1, divisor_override=-3)),
    (1, (2, 4, 17), False, dict(kernel_size=4, stride=1, padding=2, ceil_mode=True)),
    (2, (1, 5, 7, 12), False, dict(kernel_size=(2, 5), stride=(2, 1), padding=(1, 2),
                                   count_include_pad=False)),
]


@pytest.mark.parametrize("rank,shape,adaptive,kw", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_avg_backward_streamed_paths_match_plain_and_torch(monkeypatch, rank, shape, adaptive,
                                                           kw, dtype, threads):
    rng = np.random.default_rng(sum(shape) + rank)
    x = rng.standard_normal(shape).astype(dtype)
    if adaptive:
        y = getattr(cypool, f"adaptive_avg_pool{rank}d")(x, kw["output_size"])
    else:
        y = getattr(cypool, f"avg_pool{rank}d")(x, **kw)
    g = rng.standard_normal(y.shape).astype(dtype)
    want = _torch_avg_grad(x, g, rank, adaptive, kw)
    perm = (0, *range(2, rank + 2), 1)
    g_cl = np.ascontiguousarray(g.transpose(perm))
    x_cl_shape = tuple(np.array(shape)[list(perm)])
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)         # really use the thread team
    try:
        cypool.set_num_threads(threads)
        plain = _cypool_grad(g, shape, rank, adaptive, kw)
        plain_cl = _cypool_grad(g_cl, x_cl_shape, rank, adaptive, kw, channels_last=True)
        monkeypatch.setattr(_cpu, "STREAM_BYTES", 0)    # every output "large": streamed
        streamed = _cypool_grad(g, shape, rank, adaptive, kw)
        streamed_cl = _cypool_grad(g_cl, x_cl_shape, rank, adaptive, kw, channels_last=True)
    finally:
        cypool.set_num_threads(before)
    assert plain.tobytes() == want.tobytes()
    assert streamed.tobytes() == want.tobytes()
    want_cl = np.ascontiguousarray(want.transpose(perm))
    assert plain_cl.tobytes() == want_cl.tobytes()
    assert streamed_cl.tobytes() == want_cl.tobytes()


@pytest.mark.parametrize("rank, shape, kw", [
    (3, (2, 4, 6, 10, 32), dict(kernel_size=2)),
    (3, (1, 5, 7, 6, 48), dict(kernel_size=3, stride=2, padding=1)),
    (2, (3, 9, 14, 33), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (2, (2, 8, 11, 64), dict(kernel_size=(2, 3), stride=1, dilation=(2, 1))),
    (2, (1, 20, 4, 32), dict(kernel_size=(17, 1), stride=(3, 1))),
    (2, (1, 20, 4, 32), dict(kernel_size=(16, 1), stride=(3, 1)))])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", [2, 1])
def test_channels_last_max_streamed_outputs_match_plain_and_torch(monkeypatch, rank, shape, kw,
                                                                  threads, level):
    # outputs larger than the caches (STREAM_BYTES): the channel lanes' values
    # and indices written by non-temporal stores where whole lines are
    # aligned (32 channels a pixel: every line; 48: every other; 33: some);
    # the winning taps' indices looked up in registers (up to 16 taps) or
    # gathered (17)
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::7] = np.nan
    x.reshape(-1)[3::11] = x.reshape(-1)[2::11][: x.reshape(-1)[3::11].size]   # ties
    perm = (0, rank + 1, *range(1, rank + 1))
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(perm)))
    want, want_i = getattr(F, f"max_pool{rank}d")(t, return_indices=True, **kw)
    pool = getattr(cypool, f"max_pool{rank}d")
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        _kernels.limit_window_isa(level)
        plain = pool(x, return_indices=True, channels_last=True, **kw)
        monkeypatch.setattr(_cpu, "STREAM_BYTES", 0)    # every output "large": streamed
        streamed = pool(x, return_indices=True, channels_last=True, **kw)
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)
    for y, yi in (plain, streamed):
        assert y.transpose(perm).tobytes() == want.numpy().tobytes()
        assert np.array_equal(yi.transpose(perm), want_i.numpy())


@pytest.mark.parametrize("rank, shape, kw", [
    (2, (2, 3, 9, 70), dict(kernel_size=2)),             # rows of 35: not streamed
    (2, (1, 4, 9, 65), dict(kernel_size=3, stride=2)),   # rows of 32, sharing input rows
    (3, (2, 2, 4, 6, 64), dict(kernel_size=2)),
    (2, (2, 16, 14, 14), dict(kernel_size=2)),          # small planes: gathered
    (2, (3, 7, 14, 14), None)])                         # ... adaptive, 7 x 7
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", [2, 1])
def test_channels_first_max_streamed_outputs_match_plain_and_torch(monkeypatch, rank, shape, kw,
                                                                   threads, level):
    # outputs larger than the caches (STREAM_BYTES): the gather kernel's and
    # (rows of whole lines) the row kernel's aligned lines of values and
    # indices written with non-temporal stores
    rng = np.random.default_rng(sum(shape) + 5)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::9] = np.nan
    x.reshape(-1)[1::13] = x.reshape(-1)[::13][: x.reshape(-1)[1::13].size]     # ties
    t = torch.from_numpy(x)
    if kw is None:
        want, want_i = F.adaptive_max_pool2d(t, 7, return_indices=True)
        def pool(a):
            return cypool.adaptive_max_pool2d(a, 7, return_indices=True)
    else:
        want, want_i = getattr(F, f"max_pool{rank}d")(t, return_indices=True, **kw)
        def pool(a):
            return getattr(cypool, f"max_pool{rank}d")(a, return_indices=True, **kw)
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        _kernels.limit_window_isa(level)
        plain = pool(x)
        monkeypatch.setattr(_cpu, "STREAM_BYTES", 0)    # every output "large": streamed
        streamed = pool(x)
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)
    for y, yi in (plain, streamed):
        assert y.tobytes() == want.numpy().tobytes()
        assert np.array_equal(yi, want_i.numpy())


def test_runs_table():
    # bins of 5 over 2: [0, 3) and [2, 5); positions 0-1 read bin 0 only,
    # 2 reads both, 3-4 read bin 1 only
    ptr, outs = _kernels.inverse_table(_kernels.adaptive_table(5, 2), 1, 5)
    assert _kernels.runs_table(ptr, outs).tolist() == [0, 2, 3, 5]
    # identity: every position its own output
    ptr, outs = _kernels.inverse_table(_kernels.adaptive_table(4, 4), 1, 4)
    assert _kernels.runs_table(ptr, outs).tolist() == [0, 1, 2, 3, 4]
    # one window over everything
    ptr, outs = _kernels.inverse_table(_kernels.adaptive_table(6, 1), 1, 6)
    assert _kernels.runs_table(ptr, outs).tolist() == [0, 6]
    # stride 2, kernel 3, padding 1 over 6: outputs read [0,1], [1,2,3], [3,4,5]
    t = _kernels.fixed_table(6, 3, 3, 2, 1, 1, 1, True)
    ptr, outs = _kernels.inverse_table(t, 1, 6)
    assert _kernels.runs_table(ptr, outs).tolist() == [0, 1, 2, 3, 4, 6]


# ---------------------------------------------------------------------------
# The buffer cache
# ---------------------------------------------------------------------------

BIG = (1024, 1024 + 16)            # float32: just over MIN_BYTES
F32 = np.dtype(np.float32)


def test_cache_reuses_a_dropped_buffer_and_never_a_live_one():
    cache = _buffers.BufferCache(64 << 20)
    a = cache.empty(BIG, F32)
    assert a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % 64 == 0
    a[...] = 1
    b = cache.empty(BIG, F32)
    assert not np.shares_memory(a, b)
    address = a.ctypes.data
    del a
    c = cache.empty(BIG, F32)
    assert c.ctypes.data == address                      # the dropped one, reused
    view = c[::3]
    del c
    d = cache.empty(BIG, F32)
    assert not np.shares_memory(d, view)                 # a view keeps its slab in use
    assert cache.held() <= 64 << 20


def test_cache_respects_its_limit_and_size_classes():
    cache = _buffers.BufferCache(12 << 20)
    a = cache.empty(BIG, F32)                     # ~4 MiB slab
    b = cache.empty(BIG, F32)
    c = cache.empty(BIG, F32)                     # over the limit: plain array
    assert c.flags.owndata and not a.flags.owndata and not b.flags.owndata
    assert cache.held() <= 12 << 20
    del a, b, c
    small = cache.empty((10, 10), F32)            # below MIN_BYTES: never cached
    assert small.flags.owndata
    # a request far smaller than a free slab does not take it
    big = cache.empty((2048, 1024 + 16), F32)
    address = big.ctypes.data
    del big
    other = cache.empty(BIG, np.dtype(np.float64))                 # 8 MiB: same slab size class
    assert other.ctypes.data == address
    del other
    half = cache.empty(BIG, F32)                  # 4 MiB: not the 8 MiB slab
    assert half.base.nbytes < 2 * half.nbytes
    off = _buffers.BufferCache(0)
    assert off.empty(BIG, F32).flags.owndata


def test_cache_limit_from_environment(monkeypatch):
    monkeypatch.setenv("CYPOOL_BUFFER_CACHE", "16")
    assert _buffers._limit_from_env() == 16 << 20
    monkeypatch.setenv("CYPOOL_BUFFER_CACHE", "0")
    assert _buffers._limit_from_env() == 0
    monkeypatch.delenv("CYPOOL_BUFFER_CACHE")
    assert _buffers._limit_from_env() == 1024 << 20
    for bad in ("lots", "-1", "1.5"):
        monkeypatch.setenv("CYPOOL_BUFFER_CACHE", bad)
        with pytest.raises(ValueError, match="CYPOOL_BUFFER_CACHE"):
            _buffers._limit_from_env()


def test_results_from_the_cache_do_not_alias():
    g = np.random.default_rng(0).standard_normal((4, 8, 8, 8)).astype(np.float32)
    first = cypool.adaptive_avg_pool2d_backward(g, (4, 8, 256, 256))     # 8 MiB: cached
    keep = first.copy()
    second = cypool.adaptive_avg_pool2d_backward(2 * g, (4, 8, 256, 256))
    assert not np.shares_memory(first, second)
    assert np.array_equal(first, keep)                  # the live result is untouched
    assert np.array_equal(second, 2 * keep)
    del first
    third = cypool.adaptive_avg_pool2d_backward(3 * g, (4, 8, 256, 256))
    assert np.array_equal(third, 3 * keep)
    assert np.array_equal(second, 2 * keep)


# ---------------------------------------------------------------------------
# Max backward: bands of rows for channels-last with few samples, fused
# index checks
# ---------------------------------------------------------------------------

MAX_CASES = [
    (2, (1, 24, 15, 13), dict(kernel_size=3, stride=2, padding=1)),
    (2, (2, 5, 9, 11), dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True)),
    (3, (1, 17, 5, 6, 7), dict(kernel_size=2, stride=(1, 2, 2), padding=1)),
    (1, (1, 16, 29), dict(kernel_size=4, stride=3, padding=2)),
]


@pytest.mark.parametrize("rank,shape,kw", MAX_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_max_backward_bands_match_torch(monkeypatch, rank, shape, kw, threads, gathers):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::5] = 0.0                               # ties
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = getattr(F, f"max_pool{rank}d")(tx, **kw)
    g = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    perm = (0, *range(2, rank + 2), 1)
    x_cl = np.ascontiguousarray(x.transpose(perm))
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        _, idx = getattr(cypool, f"max_pool{rank}d")(x_cl, return_indices=True,
                                                     channels_last=True, **kw)
        got = getattr(cypool, f"max_pool{rank}d_backward")(
            np.ascontiguousarray(g.transpose(perm)), idx, x_cl.shape, channels_last=True, **kw)
    finally:
        cypool.set_num_threads(before)
    want = np.ascontiguousarray(tx.grad.numpy().transpose(perm))
    assert got.tobytes() == want.tobytes()


@contextlib.contextmanager
def _run_at(monkeypatch, threads, level=2, **consts):
    # cypool at `threads` threads (small calls too) and ISA level `level`,
    # with _cpu's constants `consts` patched
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    for name, value in consts.items():
        monkeypatch.setattr(_cpu, name, value)
    try:
        cypool.set_num_threads(threads)
        _kernels.limit_window_isa(level)
        yield
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)


def _scatter_sums(g, idx, shape):
    # PyTorch's max backward over channels-first planes, any index: each
    # plane's gradients added where their indices point (-1: nowhere), in order
    want = np.zeros((shape[0] * shape[1], int(np.prod(shape[2:]))), g.dtype)
    for p, (gr, ir) in enumerate(zip(g.reshape(len(want), -1), idx.reshape(len(want), -1))):
        for gv, j in zip(gr, ir):
            if j >= 0:
                want[p, j] += gv
    return want.reshape(shape)


def _max_grad_case(rank, shape, kw, seed):
    # a float32 max pool's input (the _fmax_zoo), torch's indices and input
    # gradient (tx.grad) for a gradient with -0 and NaN, and `cl`, which
    # puts a channels-first array's channels last
    rng = np.random.default_rng(seed)
    x = _fmax_zoo(shape, sum(shape))
    tx = torch.from_numpy(x).requires_grad_(True)
    tv, ti = getattr(F, f"max_pool{rank}d")(tx, return_indices=True, **kw)
    g = rng.standard_normal(tuple(tv.shape)).astype(np.float32)
    g.reshape(-1)[::7] = -0.0
    g.reshape(-1)[3::11] = np.nan
    tv.backward(torch.from_numpy(g))
    perm = (0, *range(2, rank + 2), 1)
    return x, tx, ti, g, lambda a: np.ascontiguousarray(a.transpose(perm))


DENSE_CASES = [
    # rank, channels-first shape, arguments: windows that overlap (written
    # densely only with fewer samples than 4 a thread) and windows that do not
    (2, (1, 24, 15, 13), dict(kernel_size=3, stride=2, padding=1)),
    (2, (9, 37, 14, 14), dict(kernel_size=2)),                     # 37: a 5-lane tail
    (2, (2, 16, 11, 9), dict(kernel_size=(3, 2), stride=(3, 2), padding=(1, 0),
                             ceil_mode=True)),
    (2, (1, 19, 10, 12), dict(kernel_size=3, stride=1, dilation=2, padding=1)),
    (3, (9, 16, 4, 6, 5), dict(kernel_size=2, ceil_mode=True)),
    (3, (1, 33, 5, 6, 7), dict(kernel_size=2, stride=(1, 2, 2), padding=1)),
    (1, (9, 20, 29), dict(kernel_size=4, stride=4, padding=2)),
]


@pytest.mark.parametrize("rank,shape,kw", DENSE_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("level", [2, 1])
def test_channels_last_max_backward_written_densely(monkeypatch, rank, shape, kw, threads,
                                                    stream, level):
    # each input written once from the windows reading it, in output order
    # (cp_cl_max_back_row_f32), streamed or not; level 1: the scatter.
    # torch's bits, -0 and NaN gradients included; then indices that are
    # not their window's taps (-1, elsewhere in the plane): the scatter's sums
    x, tx, ti, g, cl = _max_grad_case(rank, shape, kw, sum(shape) + threads)
    back = getattr(cypool, f"max_pool{rank}d_backward")
    plane = int(np.prod(shape[2:]))
    i2 = ti.numpy().copy()
    i2.reshape(-1)[::13] = -1
    i2.reshape(-1)[len(i2.reshape(-1)) // 2] = plane - 1 - i2.reshape(-1)[len(i2.reshape(-1)) // 2]
    want2 = _scatter_sums(g, i2, shape)
    with _run_at(monkeypatch, threads, level, DENSE_STREAM_BYTES=0 if stream else 1 << 60):
        got = back(cl(g), cl(ti.numpy()), cl(x).shape, channels_last=True, **kw)
        got2 = back(cl(g), cl(i2), cl(x).shape, channels_last=True, **kw)
    assert got.tobytes() == cl(tx.grad.numpy()).tobytes()
    assert got2.tobytes() == cl(want2).tobytes()


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_backward_takes_any_index_in_the_plane(channels_last):
    # indices that no forward call gives (outside their windows) still go
    # where they point, as in PyTorch's CPU scatter
    rng = np.random.default_rng(5)
    n, c, h, w = 1, 20, 8, 8
    g = rng.standard_normal((n, c, 4, 4)).astype(np.float32)
    idx = rng.integers(-1, h * w, size=g.shape)
    want = np.zeros((n, c, h * w), np.float32)
    for ci in range(c):
        for o in range(16):
            j = idx[0, ci].reshape(-1)[o]
            if j >= 0:
                want[0, ci, j] += g[0, ci].reshape(-1)[o]
    want = want.reshape(n, c, h, w)
    if channels_last:
        got = cypool.max_pool2d_backward(np.ascontiguousarray(g.transpose(0, 2, 3, 1)),
                                         np.ascontiguousarray(idx.transpose(0, 2, 3, 1)),
                                         (n, h, w, c), 2, channels_last=True)
        got = got.transpose(0, 3, 1, 2)
    else:
        got = cypool.max_pool2d_backward(g, idx, (n, c, h, w), 2)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("level", [2, 1])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("shift", [-1, 0])
@pytest.mark.parametrize("oh,ow,ch", [(3, 0, 5), (5, 7, 19), (1, 2, 0), (6, 4, 12)])
def test_max_backward_bands_take_indices_just_outside_the_window(monkeypatch, threads, shift,
                                                                level, oh, ow, ch):
    # channels-last, batch 1: bands of input rows.  An index one position
    # past the last row of its window (shift 0) or one before its first
    # (shift -1) lies in another band, which must still receive it.  At
    # level 2 (AVX-512F) the check is made by the scatter, in either half of
    # its 16 lanes (channels 0-7 and 8-15 of 16; 16-19 in a second, partial
    # vector); at level 1 by a pass of its own.  One such index a case: the
    # first found sends the whole gradient to the plain scatter.
    rng = np.random.default_rng(11 + threads)
    h = w = 16
    c = 20
    x = rng.standard_normal((1, h, w, c)).astype(np.float32)
    _, idx = cypool.max_pool2d(x, 2, channels_last=True, return_indices=True)
    g = rng.standard_normal(idx.shape).astype(np.float32)
    first, last = 2 * oh, 2 * oh + 1
    idx[0, oh, ow, ch] = (last + 1) * w if shift == 0 else first * w - 1
    want = np.zeros((h * w, c), np.float32)
    for o, (j, v) in enumerate(zip(idx.reshape(-1, c), g.reshape(-1, c))):
        for ch in range(c):
            want[j[ch], ch] += v[ch]
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    before = cypool.get_num_threads()
    try:
        cypool.set_num_threads(threads)
        _kernels.limit_window_isa(level)
        got = cypool.max_pool2d_backward(g, idx, x.shape, 2, channels_last=True)
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)
    assert got.reshape(h * w, c).tobytes() == want.tobytes()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bad", [-2, 64, 10**12])
def test_max_backward_bad_index_found_by_the_kernel(channels_last, bad):
    g = np.ones((1, 20, 4, 4), np.float32)
    idx = np.zeros(g.shape, np.int64)
    idx[0, 7, 2, 1] = bad
    shape = (1, 20, 8, 8)
    if channels_last:
        g, idx, shape = (np.ascontiguousarray(g.transpose(0, 2, 3, 1)),
                         np.ascontiguousarray(idx.transpose(0, 2, 3, 1)), (1, 8, 8, 20))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 64\)"):
        cypool.max_pool2d_backward(g, idx, shape, 2, channels_last=channels_last)
    out = np.full(shape, 7.0, np.float32)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 64\)"):
        cypool.max_pool2d_backward(g, idx, shape, 2, channels_last=channels_last, out=out)
    assert (out == 7.0).all()                            # checked before any work


@pytest.mark.parametrize("rank,shape,kw", [
    (2, (9, 20, 15, 13), dict(kernel_size=3, stride=2, padding=1)),   # the ResNet stem's
    (2, (12, 17, 9, 10), dict(kernel_size=3, stride=1, padding=1)),
    (3, (8, 16, 5, 6, 7), dict(kernel_size=2, stride=1, padding=1)),
])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("band_bytes", [1 << 20, 2048])
@pytest.mark.parametrize("stream", [False, True])
def test_channels_last_max_backward_bands_with_many_samples(monkeypatch, rank, shape, kw,
                                                            threads, band_bytes, stream):
    # channels-last overlapping windows with samples enough for the threads:
    # bands of rows too (a sample each, or several where BAND_BYTES is
    # small), summed in place or (stream) in a buffer streamed out band by
    # band: torch's bits (-0 and NaN gradients), then an index past its
    # window's rows in the last sample (the whole call goes to the scatter)
    # into an out= view with sentinels, then a bad index raising
    x, tx, ti, g, cl = _max_grad_case(rank, shape, kw, sum(shape) + threads)
    back = getattr(cypool, f"max_pool{rank}d_backward")
    plane = int(np.prod(shape[2:]))
    i2 = ti.numpy().copy()
    i2[-1, 3].reshape(-1)[0] = plane - 1                      # (the plane's last position)
    want2 = _scatter_sums(g, i2, shape)
    n = x.size
    raw = np.full(n + 64, 7.0, np.float32)
    buf = raw[(-raw.ctypes.data % 64) // 4:][:n + 32]
    picked = []
    kernel = _cpu._kernel
    monkeypatch.setattr(_cpu, "_kernel", lambda name, dt: picked.append(name) or kernel(name, dt))
    with _run_at(monkeypatch, threads, 2, BAND_BYTES=band_bytes,
                 BAND_STREAM_BYTES=0 if stream else 1 << 60):
        got = back(cl(g), cl(ti.numpy()), cl(x).shape, channels_last=True, **kw)
        assert "max_backward" not in picked     # (bands, or the dense rows: no scatter)
        got2 = back(cl(g), cl(i2), cl(x).shape, channels_last=True,
                    out=buf[5:5 + n].reshape(cl(x).shape), **kw)
        i2[-1, 3].reshape(-1)[0] = plane
        with pytest.raises(ValueError, match=r"indices must lie in"):
            back(cl(g), cl(i2), cl(x).shape, channels_last=True, **kw)
    assert got.tobytes() == cl(tx.grad.numpy()).tobytes()
    assert got2.tobytes() == cl(want2).tobytes()
    assert (buf[:5] == 7).all() and (buf[5 + n:] == 7).all()


@pytest.mark.parametrize("rank,shape,kw", [
    (2, (2, 7, 15, 13), dict(kernel_size=3, stride=2, padding=1)),   # overlapping windows
    (2, (1, 5, 9, 31), dict(kernel_size=(2, 3), stride=1, dilation=(1, 2))),
    (3, (2, 3, 5, 6, 7), dict(kernel_size=2, stride=1, padding=1)),
    (1, (3, 4, 40), dict(kernel_size=5, stride=3, padding=2, ceil_mode=True)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True])
def test_channels_first_max_backward_scatter(monkeypatch, rank, shape, kw, dtype, threads,
                                             stream):
    # the channels-first scatter, into the output in place or (stream: large
    # outputs) into a zeroed plane buffer streamed out whole: torch's bits
    # (up to four terms an input, -0 and NaN gradients), then indices that
    # are not their window's taps (-1, elsewhere in the plane), into an out=
    # view at three offsets from a line with sentinels; a bad index raises
    rng = np.random.default_rng(sum(shape) + threads)
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[::3] = 0.5                          # ties: more windows share a tap
    tx = torch.from_numpy(x).requires_grad_(True)
    tv, ti = getattr(F, f"max_pool{rank}d")(tx, return_indices=True, **kw)
    g = rng.standard_normal(tuple(tv.shape)).astype(dtype)
    g.reshape(-1)[::7] = -0.0
    g.reshape(-1)[3::11] = np.nan
    tv.backward(torch.from_numpy(g))
    back = getattr(cypool, f"max_pool{rank}d_backward")
    plane = int(np.prod(shape[2:]))
    i2 = ti.numpy().copy()
    i2.reshape(-1)[5::17] = plane - 1 - i2.reshape(-1)[5::17]
    i2.reshape(-1)[::13] = -1
    want2 = _scatter_sums(g, i2, shape)
    n = x.size
    with _run_at(monkeypatch, threads, 2, STREAM_BYTES=0 if stream else 1 << 60,
                 _stride2_windows=lambda plan: None):     # (not the dense rows)
        got = back(g, ti.numpy(), shape, **kw)
        for lead in (0, 1, 6):
            raw = np.full(n + 64, 7.0, dtype)
            buf = raw[(-raw.ctypes.data % 64) // raw.itemsize:][:n + 32]
            got2 = back(g, i2, shape, out=buf[lead:lead + n].reshape(shape), **kw)
            assert np.shares_memory(got2, buf)
            assert got2.tobytes() == want2.tobytes(), lead
            assert (buf[:lead] == 7).all() and (buf[lead + n:] == 7).all()
        i2.reshape(-1)[-1] = plane
        with pytest.raises(ValueError, match=r"indices must lie in"):
            back(g, i2, shape, **kw)
    assert got.tobytes() == tx.grad.numpy().tobytes()



S2_CASES = [
    # rank, channels-first shape, arguments: windows 2 apart along W of at
    # most 3 columns and at most 3 rows (cp_fmax_s2_back_f32)
    (2, (2, 5, 15, 13), dict(kernel_size=3, stride=2, padding=1)),     # the stem, odd sizes
    (2, (1, 3, 32, 64), dict(kernel_size=3, stride=2, padding=1)),     # whole lines, OW 32
    (2, (2, 3, 14, 17), dict(kernel_size=3, stride=2, ceil_mode=True)),
    (2, (1, 4, 11, 9), dict(kernel_size=(2, 3), stride=(1, 2), padding=1)),  # rows overlap
    (2, (2, 2, 13, 35), dict(kernel_size=(3, 2), stride=(3, 2), padding=1, ceil_mode=True)),
    (2, (1, 3, 33, 80), dict(kernel_size=(1, 3), stride=2)),           # rows no window reads
    (2, (2, 3, 9, 40), dict(kernel_size=(3, 1), stride=2)),
    (2, (1, 2, 5, 3), dict(kernel_size=3, stride=2, padding=1)),       # 3 columns
    (1, (3, 4, 41), dict(kernel_size=3, stride=2, padding=1)),
]


@pytest.mark.parametrize("rank,shape,kw", S2_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True])
def test_channels_first_max_backward_of_windows_two_apart_written_densely(
        monkeypatch, rank, shape, kw, threads, stream):
    # each input row written once from the windows that read it, in output
    # order: torch's bits (up to four terms an input, -0 and NaN gradients,
    # NaN payloads); indices that are not their window's taps (-1, elsewhere
    # in the plane) send the call to the scatter: its sums, into an out=
    # view with sentinels; a bad index raises
    x, _, ti, g, _ = _max_grad_case(rank, shape, kw, sum(shape) + threads)
    g.reshape(-1)[2::9] = np.array([0x7FC00321], np.uint32).view(np.float32)[0]
    tx = torch.from_numpy(x).requires_grad_(True)     # (NaNs of two payloads meet)
    getattr(F, f"max_pool{rank}d")(tx, **kw).backward(torch.from_numpy(g))
    back = getattr(cypool, f"max_pool{rank}d_backward")
    plane = int(np.prod(shape[2:]))
    i2 = ti.numpy().copy()
    i2.reshape(-1)[5::17] = plane - 1 - i2.reshape(-1)[5::17]
    i2.reshape(-1)[::13] = -1
    g1 = np.where(np.isnan(g), np.float32(np.nan), g)  # (one payload: NumPy's sums)
    want2 = _scatter_sums(g1, i2, shape)
    said = []
    real = _kernels.max_backward_s2

    def spy(*a):
        said.append(real(*a))
        return said[-1]

    monkeypatch.setattr(_kernels, "max_backward_s2", spy)
    n = x.size
    with _run_at(monkeypatch, threads, 2, STREAM_BYTES=0 if stream else 1 << 60):
        got = back(g, ti.numpy(), shape, **kw)
        assert said == [0]
        raw = np.full(n + 64, 7.0, np.float32)
        buf = raw[(-raw.ctypes.data % 64) // 4:][:n + 32]
        got2 = back(g1, i2, shape, out=buf[3:3 + n].reshape(shape), **kw)
        assert said == [0, 2] and np.shares_memory(got2, buf)
        i2.reshape(-1)[-1] = plane
        with pytest.raises(ValueError, match=r"indices must lie in"):
            back(g, i2, shape, **kw)
    assert got.tobytes() == tx.grad.numpy().tobytes()
    assert got2.tobytes() == want2.tobytes()
    assert (buf[:3] == 7).all() and (buf[3 + n:] == 7).all()
    # (another instruction set: the kernel declines)
    _kernels.limit_window_isa(1)
    try:
        assert back(g, ti.numpy(), shape, **kw).tobytes() == got.tobytes()
        assert said[-1] is None
    finally:
        _kernels.limit_window_isa(2)

def _sum16_tree(q):
    # cp_sum16 of a float32 row, as x86 adds: 16 partial sums from +0 (value
    # j to sum j % 16 while whole vectors last), then the tree [j] + [j + 8],
    # [j] + [j + 4], [j] + [j + 2], [0] + [1], then the values left in order;
    # where both operands are NaN the sum is the first one's, quieted
    def add(a, b):
        for v in (a, b):
            if np.isnan(v):
                return (np.array([v], np.float32).view(np.uint32) | 0x400000).view(np.float32)[0]
        with np.errstate(over="ignore"):
            return np.float32(a + b)

    full = len(q) // 16 * 16
    acc = [np.float32(0)] * 16
    for i in range(0, full, 16):
        acc = [add(acc[j], q[i + j]) for j in range(16)]
    for h in (8, 4, 2, 1):
        acc = [add(acc[j], acc[j + h]) for j in range(h)]
    s = acc[0]
    for v in q[full:]:
        s = add(s, v)
    return s


@pytest.mark.parametrize("planes,hw", [((2, 37), (7, 7)), ((4, 16), (4, 4)), ((1, 33), (5, 7)),
                                       ((5, 9), (16, 3)), ((3, 17), (3, 4)), ((2, 40), (9, 9))])
@pytest.mark.parametrize("level", [2, 1])
def test_global_average_of_channels_first_planes_is_cp_sum16(monkeypatch, planes, hw, level):
    # whole-plane averages of fewer than 256 values (AVX-512 at level 2,
    # AVX2 at level 1), at 1-3 threads: every plane's bits those of cp_sum16
    # in its stated operand order (NaN payloads of both signs: a compiler
    # free to swap an add's operands kept the wrong NaN), / H / W as
    # PyTorch's adaptive average divides
    rng = np.random.default_rng(planes[1] + hw[0])
    x = rng.standard_normal(planes + hw).astype(np.float32)
    f = x.reshape(-1)
    f[::17] = -0.0
    m = planes[0] * planes[1]                            # (specials: about 1 a plane)
    for count, bits in [(m // 3, 0x7FC00000), (m // 4, 0x7FC00123), (m // 4, 0xFFC00456),
                        (m // 8, 0x7F800000), (m // 4, 0x7F000000)]:  # NaNs, inf, 2^127
        f[rng.choice(f.size, count, replace=False)] = np.array([bits], np.uint32).view(np.float32)[0]
    n = hw[0] * hw[1]
    want = np.array([_sum16_tree(p) / np.float32(hw[0]) / np.float32(hw[1])
                     for p in x.reshape(-1, n)], np.float32)
    assert np.isnan(want).any() and np.isfinite(want).any()
    for threads in (1, 2, 3):
        with _run_at(monkeypatch, threads, level):
            got = cypool.adaptive_avg_pool2d(x, 1)
            glob = cypool.global_avg_pool2d(x)
        assert got.reshape(-1).tobytes() == want.tobytes(), threads
        assert glob.reshape(-1).tobytes() == want.tobytes(), threads


@pytest.mark.parametrize("C", [256, 272, 320])
@pytest.mark.parametrize("hw,osize", [((7, 7), (1, 1)), ((9, 6), (4, 3)), ((5, 4), (5, 4)),
                                      ((13, 11), (3, 2))])
@pytest.mark.parametrize("level", [2, 1])
def test_channels_last_adaptive_averages_of_wide_pixels_match_torch(monkeypatch, C, hw, osize,
                                                                    level):
    # channels-last pixels of 1 KiB and more: each window summed a tap's
    # whole pixel at a time through the output row, which is then divided
    # by the window's extents in turn (cp_div3_row_f32: by exact
    # reciprocals at level 2, divisors of 1 left out, the 5 x 4 -> 5 x 4
    # bins being all 1s), the lanes past the first multiple of 64 in
    # registers.  torch's _adaptive_avg_pool2d (not its mean, which
    # F.adaptive_avg_pool2d takes for 1 x 1) bit for bit: -0, inf, NaN,
    # huge values, and sums near the reciprocals' range ends (2^-40, 2^100)
    # and below it (subnormal quotients)
    rng = np.random.default_rng(C + hw[0] + osize[0])
    x = rng.standard_normal((12, C) + hw).astype(np.float32)    # (whole pixels an item)
    x[0] *= np.float32(2.0 ** -40)
    x[1, : C // 2] *= np.float32(2.0 ** 100)
    x[1, C // 2:] *= np.float32(2.0 ** -130)
    _specials(x.reshape(-1), rng, 13, max(1, x.size // 200))
    want = torch.ops.aten._adaptive_avg_pool2d(torch.from_numpy(x), list(osize)).numpy()
    fin = np.abs(want[np.isfinite(want)])
    assert np.isnan(want).any() and np.isinf(want).any() and (fin < 2.0 ** -126).any()
    x_cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    want_cl = np.ascontiguousarray(want.transpose(0, 2, 3, 1))
    for threads in (1, 2, 3):
        with _run_at(monkeypatch, threads, level):
            got = cypool.adaptive_avg_pool2d(x_cl, osize, channels_last=True)
            if osize == (1, 1):
                glob = cypool.global_avg_pool2d(x_cl, channels_last=True)
                assert glob.tobytes() == want_cl.tobytes(), threads
        assert got.tobytes() == want_cl.tobytes(), threads


@pytest.mark.parametrize("dtype,C", [(np.float64, 64), (np.float64, 72), (np.float32, 128),
                                     (np.float32, 136)])
@pytest.mark.parametrize("level", [2, 1, 0])
def test_channels_last_average_lanes_of_512_byte_steps_match_torch(monkeypatch, dtype, C,
                                                                   level):
    # channels-last windows summed in registers 512 bytes of lanes a tap
    # (float64's 64 channels, float32's 128), the rest in 256-, 64- and
    # 32-byte steps: torch's bits at every instruction-set level, NaNs of
    # several payloads (which one a sum keeps depends on the operand order)
    x, f, rng = _zeros_zoo((2, C, 12, 10), dtype, C + level, 11)
    _nan_payloads(f, rng, f.size // 300)
    f[rng.choice(f.size, f.size // 300, replace=False)] = np.inf
    tx = torch.from_numpy(x)
    want_a = F.adaptive_avg_pool2d(tx, (3, 4)).numpy()
    want_f = F.avg_pool2d(tx, 3, 2, 1, ceil_mode=True, count_include_pad=False).numpy()
    assert np.isnan(want_a).any() and np.isnan(want_f).any() and np.isfinite(want_f).any()
    cl = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))
    with _run_at(monkeypatch, 2, level):
        got_a = cypool.adaptive_avg_pool2d(cl(x), (3, 4), channels_last=True)
        got_f = cypool.avg_pool2d(cl(x), 3, 2, 1, ceil_mode=True, count_include_pad=False,
                                  channels_last=True)
    assert got_a.tobytes() == cl(want_a).tobytes()
    assert got_f.tobytes() == cl(want_f).tobytes()


# ---------------------------------------------------------------------------
# Replayed calls (the argument layer skipped for a repeated call)
# ---------------------------------------------------------------------------

def test_repeated_call_is_replayed_and_gives_the_same_result():
    from cypool import _functions

    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    first = cypool.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    key = _functions._replay_key("avg_pool2d", x, None,
                                 (3, 2, 1, True, True, None, 1, False))
    assert key in _functions._REPLAY
    again = cypool.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert again.tobytes() == first.tobytes() and again is not first


@pytest.mark.parametrize("call", [
    lambda x: cypool.adaptive_avg_pool2d(x, True),               # bool, not int
    lambda x: cypool.adaptive_avg_pool2d(x, 2.0),                # float equal to 2
    lambda x: cypool.adaptive_avg_pool2d(x, (2, 2.0)),
    lambda x: cypool.adaptive_avg_pool2d(x, 2, channels_last=1),
    lambda x: cypool.max_pool2d(x, 2, return_indices=1),
    lambda x: cypool.global_avg_pool2d(x, keepdims=1),
])
def test_replay_keeps_argument_types_apart(call):
    x = np.ones((1, 2, 4, 4), np.float32)
    cypool.adaptive_avg_pool2d(x, 2)                             # valid calls first
    cypool.adaptive_avg_pool2d(x, (2, 2))
    cypool.adaptive_avg_pool2d(x, 2, channels_last=False)
    cypool.max_pool2d(x, 2, return_indices=True)
    cypool.global_avg_pool2d(x, keepdims=True)
    with pytest.raises(TypeError):
        call(x)


def test_replayed_max_backward_still_checks_indices():
    x = np.random.default_rng(2).standard_normal((1, 20, 8, 8)).astype(np.float32)
    y, idx = cypool.max_pool2d(x, 2, return_indices=True)
    g = np.ones_like(y)
    cypool.max_pool2d_backward(g, idx, x.shape, 2)               # remembered
    bad = idx.copy()
    bad[0, 3, 1, 1] = 64
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 64\)"):
        cypool.max_pool2d_backward(g, bad, x.shape, 2)
    with pytest.raises(ValueError, match="grad_output"):
        cypool.max_pool2d_backward(g, idx, (1, 20, 10, 8), 2)


def test_replay_follows_the_thread_count():
    x = np.random.default_rng(3).standard_normal((8, 16, 64, 64)).astype(np.float32)
    before = cypool.get_num_threads()
    try:
        cypool.set_num_threads(1)
        one = cypool.adaptive_avg_pool2d(x, 5)
        cypool.set_num_threads(2)
        two = cypool.adaptive_avg_pool2d(x, 5)
    finally:
        cypool.set_num_threads(before)
    assert one.tobytes() == two.tobytes()


# ---------------------------------------------------------------------------
# Whole-window lane loops: every instruction-set level gives the same bits
# ---------------------------------------------------------------------------

def _nasty(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::7] = np.round(flat[::7])                         # ties
    flat[3::29] = np.nan                                     # several NaNs per window
    flat[5::31] = -np.inf
    flat[11::37] = np.inf
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lanes", [1, 3, 8, 15, 16, 17, 33, 40])
def test_window_lane_loops_agree_at_every_isa_level(dtype, lanes):
    rng = np.random.default_rng(lanes)
    x = _nasty(rng, (2, 9, 11, lanes), dtype)               # channels-last
    results = []
    try:
        for level in (2, 1, 0):
            _kernels.limit_window_isa(level)
            v, i = cypool.max_pool2d(x, 3, 2, 1, return_indices=True, channels_last=True)
            vv = cypool.max_pool2d(x, (2, 3), 1, channels_last=True)
            a = cypool.avg_pool2d(x, 3, 2, 1, channels_last=True)
            results.append((v.tobytes(), i.tobytes(), vv.tobytes(), a.tobytes()))
    finally:
        _kernels.limit_window_isa(2)
    assert results[0] == results[1] == results[2]
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tv, ti = F.max_pool2d(tx, 3, 2, 1, return_indices=True)
    assert np.array_equal(v.transpose(0, 3, 1, 2), tv.numpy(), equal_nan=True)
    assert np.array_equal(i.transpose(0, 3, 1, 2), ti.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_lanes_max_agrees_at_every_isa_level(dtype):
    # channels-first planes pooled as lanes of transposed blocks
    x = _nasty(np.random.default_rng(9), (3, 13, 12, 10), dtype)
    results = []
    try:
        for level in (2, 1, 0):
            _kernels.limit_window_isa(level)
            v, i = cypool.max_pool2d(x, 3, 2, 1, return_indices=True)
            results.append((v.tobytes(), i.tobytes()))
    finally:
        _kernels.limit_window_isa(2)
    assert results[0] == results[1] == results[2]
    tv, ti = F.max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    assert np.array_equal(v, tv.numpy(), equal_nan=True) and np.array_equal(i, ti.numpy())


# ---------------------------------------------------------------------------
# Channels-first windows of stride 1 along W: shifted vector steps
# ---------------------------------------------------------------------------

SHIFT_CASES = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=(2, 4), stride=(2, 1), padding=(1, 2), ceil_mode=True),
    dict(kernel_size=3, stride=1, padding=1, dilation=2),
    dict(kernel_size=(1, 5), stride=1, padding=(0, 2)),
]


@pytest.mark.parametrize("kw", SHIFT_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stride1_rows_match_torch(kw, dtype):
    x = _nasty(np.random.default_rng(len(kw)), (2, 3, 9, 37), dtype)   # 37+ output columns
    t = torch.from_numpy(x)
    v, i = cypool.max_pool2d(x, return_indices=True, **kw)
    tv, ti = F.max_pool2d(t, return_indices=True, **kw)
    assert np.array_equal(v, tv.numpy(), equal_nan=True) and np.array_equal(i, ti.numpy())
    assert np.array_equal(cypool.max_pool2d(x, **kw), tv.numpy(), equal_nan=True)
    akw = {k: v for k, v in kw.items() if k != "dilation"}
    xf = np.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0)             # finite averages
    for cip in (True, False):
        a = cypool.avg_pool2d(xf, count_include_pad=cip, **akw)
        ta = F.avg_pool2d(torch.from_numpy(xf), count_include_pad=cip, **akw)
        assert a.tobytes() == ta.numpy().tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [
    dict(kernel_size=3, stride=(2, 1, 1), padding=1),
    dict(kernel_size=(2, 3, 4), stride=(1, 2, 1), padding=(1, 1, 2), ceil_mode=True),
    dict(kernel_size=3, stride=1, padding=1, divisor_override=7),
])
def test_stride1_planes_3d_match_torch(kw, dtype):
    # channels-first averages of stride 1 along W, a whole plane at a time:
    # every (depth, row) of the plane read from its padded copy
    x = np.random.default_rng(3).standard_normal((3, 2, 5, 6, 40)).astype(dtype) * 100
    for cip in (True, False):
        a = cypool.avg_pool3d(x, count_include_pad=cip, **kw)
        ta = F.avg_pool3d(torch.from_numpy(x), count_include_pad=cip, **kw)
        assert a.tobytes() == ta.numpy().tobytes()
    x1 = np.ascontiguousarray(x[:, :, 0, 0, :])
    a = cypool.avg_pool1d(x1, 5, 1, 2, count_include_pad=False)
    assert a.tobytes() == F.avg_pool1d(torch.from_numpy(x1), 5, 1, 2,
                                       count_include_pad=False).numpy().tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rank, kw", [
    (2, dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    (2, dict(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), ceil_mode=True)),
    (3, dict(kernel_size=(2, 3, 4), stride=(1, 2, 1), padding=(1, 1, 2),
             count_include_pad=False)),
    (1, dict(kernel_size=5, stride=1, padding=2, count_include_pad=False)),
    (2, dict(kernel_size=3, stride=1, padding=1, divisor_override=5)),
])
def test_stride1_planes_backward_match_torch(rank, kw, dtype):
    # channels-first average backward of stride 1 along W, a plane at a
    # time: each plane's gradients scaled into padded rows, every input row
    # summing shifted rows in output order
    shape = (3, 5) + ((6, 7, 40) if rank == 3 else (9, 37) if rank == 2 else (45,))[-rank:]
    x = torch.from_numpy(np.zeros(shape, dtype)).requires_grad_(True)
    y = getattr(F, f"avg_pool{rank}d")(x, **kw)
    g = np.random.default_rng(rank).standard_normal(tuple(y.shape)).astype(dtype) * 100
    y.backward(torch.from_numpy(g))
    got = getattr(cypool, f"avg_pool{rank}d_backward")(g, shape, **kw)
    assert got.tobytes() == x.grad.numpy().tobytes()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("case", [
    ("adaptive", dict(output_size=(2, 5))),
    ("fixed", dict(kernel_size=3, stride=2, padding=1)),
])
def test_channels_last_few_rows_split_by_columns(monkeypatch, threads, case):
    # batch 1 with few output rows: items split the columns, not the channels
    kind, kw = case
    x = _nasty(np.random.default_rng(threads), (1, 40, 6, 29), np.float32)
    xf = np.nan_to_num(x, nan=0.25, posinf=2.0, neginf=-2.0)
    x_cl = np.ascontiguousarray(xf.transpose(0, 2, 3, 1))
    t = torch.from_numpy(xf).requires_grad_(True)
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        if kind == "adaptive":
            a = cypool.adaptive_avg_pool2d(x_cl, kw["output_size"], channels_last=True)
            v, i = cypool.adaptive_max_pool2d(x_cl, kw["output_size"], True, channels_last=True)
            ta = F.adaptive_avg_pool2d(t, kw["output_size"])
            tv, ti = F.adaptive_max_pool2d(t, kw["output_size"], return_indices=True)
            g = np.ones(a.shape, np.float32)
            ga = cypool.adaptive_avg_pool2d_backward(g, x_cl.shape, channels_last=True)
        else:
            a = cypool.avg_pool2d(x_cl, channels_last=True, **kw)
            v, i = cypool.max_pool2d(x_cl, return_indices=True, channels_last=True, **kw)
            ta = F.avg_pool2d(t, **kw)
            tv, ti = F.max_pool2d(t, return_indices=True, **kw)
            g = np.ones(a.shape, np.float32)
            ga = cypool.avg_pool2d_backward(g, x_cl.shape, channels_last=True, **kw)
    finally:
        cypool.set_num_threads(before)
    cl = (0, 2, 3, 1)
    assert a.tobytes() == np.ascontiguousarray(ta.detach().numpy().transpose(cl)).tobytes()
    assert v.tobytes() == np.ascontiguousarray(tv.detach().numpy().transpose(cl)).tobytes()
    assert i.tobytes() == np.ascontiguousarray(ti.numpy().transpose(cl)).tobytes()
    ta.backward(torch.ones_like(ta))
    assert ga.tobytes() == np.ascontiguousarray(t.grad.numpy().transpose(cl)).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("osize", [(2, 7), (3, 9), (1, 20), (2, 37)])
def test_channels_first_row_sweep_chains_match_torch(dtype, osize):
    # few planes (no plane lanes): up to eight outputs' chains side by side,
    # broken wherever the window width changes
    x = np.random.default_rng(osize[1]).standard_normal((1, 3, 11, 301)).astype(dtype)
    got = cypool.adaptive_avg_pool2d(x, osize)
    want = F.adaptive_avg_pool2d(torch.from_numpy(x), osize).numpy()
    assert got.tobytes() == want.tobytes()
    got = cypool.avg_pool2d(x, (3, 8), (2, 5), (1, 3), ceil_mode=True)
    want = F.avg_pool2d(torch.from_numpy(x), (3, 8), (2, 5), (1, 3), ceil_mode=True).numpy()
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_last_averages_divided_in_registers(dtype):
    # every divisor rule of the fused division: adaptive extents, the
    # window's tap count, an override (negative: zero sums give +0.0), and
    # windows with no divisor (dilated, wholly in the padding) giving 0
    from cypool import reference

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 9, 11, 70)).astype(dtype)       # channels-last, 70 lanes
    x[0, :3] = 0.0
    x[0, :3, :, ::2] = -0.0
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    cl = (0, 2, 3, 1)
    cases = [
        (cypool.adaptive_avg_pool2d(x, (4, 5), channels_last=True),
         F.adaptive_avg_pool2d(t, (4, 5))),
        (cypool.avg_pool2d(x, 3, 2, 1, count_include_pad=False, channels_last=True),
         F.avg_pool2d(t, 3, 2, 1, count_include_pad=False)),
        (cypool.avg_pool2d(x, 3, 2, 1, divisor_override=-4, channels_last=True),
         F.avg_pool2d(t, 3, 2, 1, divisor_override=-4)),
    ]
    for got, want in cases:
        assert got.tobytes() == np.ascontiguousarray(want.numpy().transpose(cl)).tobytes()
    kw = dict(stride=1, padding=((4, 4), (0, 0)), dilation=(5, 1), count_include_pad=False)
    got = cypool.avg_pool2d(x, (2, 2), channels_last=True, **kw)
    first = cypool.avg_pool2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), (2, 2), **kw)
    assert got.tobytes() == np.ascontiguousarray(first.transpose(cl)).tobytes()
    want = reference.fixed_pool(x, (2, 2), "avg", 2, channels_last=True, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-7)
    # two rows, taps 4 apart, 2 of padding each side: every window lies wholly
    # in the padding (no divisor, no taps) and averages to +0.0
    kw = dict(stride=1, padding=((2, 2), (0, 0)), dilation=(4, 1), count_include_pad=False)
    got = cypool.avg_pool2d(x[:, :2], (2, 2), channels_last=True, **kw)
    assert got.shape[1] == 2 and (got == 0).all() and not np.signbit(got).any()


# ---------------------------------------------------------------------------
# Channels-first averages of many planes: row lanes (G planes as vector lanes)
# ---------------------------------------------------------------------------

ROW_LANE_CASES = [
    # rank, NC-first shape (N*C planes: full groups of lanes and a partial one)
    (2, (2, 19, 23, 19), "adaptive", dict(output_size=(7, 5))),    # overlapping bins
    (2, (3, 11, 16, 16), "adaptive", dict(output_size=(4, 4))),    # exact bins
    (2, (2, 20, 14, 14), "fixed", dict(kernel_size=2, stride=2)),
    (2, (1, 40, 13, 11), "fixed", dict(kernel_size=3, stride=1, padding=1,
                                       count_include_pad=False)),
    (2, (2, 17, 12, 12), "fixed", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (2, (1, 33, 9, 13), "fixed", dict(kernel_size=(3, 2), stride=(1, 3), padding=(1, 1),
                                      divisor_override=-3)),
    (1, (5, 7, 31), "fixed", dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    (1, (4, 9, 29), "adaptive", dict(output_size=9)),
    (3, (2, 10, 6, 8, 8), "fixed", dict(kernel_size=2, stride=2)),
    (3, (1, 17, 7, 9, 8), "adaptive", dict(output_size=(3, 4, 2))),
    (3, (1, 20, 5, 6, 7), "fixed", dict(kernel_size=3, stride=1, padding=1)),  # overlap in D
]


@pytest.mark.parametrize("rank,shape,kind,kw", ROW_LANE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channels_first_row_lanes_match_torch(monkeypatch, rank, shape, kind, kw, dtype,
                                              threads):
    rng = np.random.default_rng(sum(shape) + rank)
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[::3] = -0.0           # all-(-0.0) windows must still sum to +0.0
    x.reshape(-1)[1::7] = 0.0
    name = f"adaptive_avg_pool{rank}d" if kind == "adaptive" else f"avg_pool{rank}d"
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        got = getattr(cypool, name)(x, **kw)
    finally:
        cypool.set_num_threads(before)
    want = getattr(F, name)(torch.from_numpy(x), **kw).numpy()
    assert got.tobytes() == want.tobytes()


def _max_like_torch(monkeypatch, rank, kind, x, kw, threads, levels=(2,)):
    # values and indices, and values only, at `threads` threads and each ISA
    # level, against torch's bits
    name = f"adaptive_max_pool{rank}d" if kind == "adaptive" else f"max_pool{rank}d"
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    results = []
    try:
        cypool.set_num_threads(threads)
        for level in levels:
            _kernels.limit_window_isa(level)
            results.append(getattr(cypool, name)(x, return_indices=True, **kw)
                           + (getattr(cypool, name)(x, **kw),))
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)
    tv, ti = getattr(F, name)(torch.from_numpy(x), return_indices=True, **kw)
    for v, i, vv in results:
        assert v.tobytes() == tv.numpy().tobytes() and vv.tobytes() == v.tobytes()
        assert np.array_equal(i, ti.numpy())


MAX_ROW_LANE_CASES = [
    (2, (2, 19, 23, 19), "adaptive", dict(output_size=(7, 5))),
    (2, (1, 40, 13, 11), "fixed", dict(kernel_size=3, stride=2, padding=1)),
    (2, (2, 17, 12, 12), "fixed", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (2, (1, 33, 9, 13), "fixed", dict(kernel_size=(3, 2), stride=(1, 3), padding=1,
                                      dilation=(2, 3))),
    (2, (2, 20, 14, 14), "fixed", dict(kernel_size=2)),
    (1, (4, 9, 29), "adaptive", dict(output_size=9)),
    (1, (5, 7, 31), "fixed", dict(kernel_size=4, stride=3, padding=2, ceil_mode=True)),
    (3, (2, 10, 6, 8, 8), "fixed", dict(kernel_size=2)),
    (3, (1, 20, 5, 6, 7), "fixed", dict(kernel_size=3, stride=1, padding=1)),
    (3, (1, 17, 7, 9, 8), "adaptive", dict(output_size=(3, 4, 2))),
]


@pytest.mark.parametrize("rank,shape,kind,kw", MAX_ROW_LANE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_channels_first_max_row_lanes_match_torch(monkeypatch, rank, shape, kind, kw, dtype,
                                                  threads):
    # NaN (the last one wins), -inf everywhere in some windows, ties (the first wins)
    x = _nasty(np.random.default_rng(sum(shape)), shape, dtype)
    x.reshape(-1)[5::11] = np.round(x.reshape(-1)[5::11])
    x[0, 1] = -np.inf
    _max_like_torch(monkeypatch, rank, kind, x, kw, threads)


# ---------------------------------------------------------------------------
# Channels-first float32 max, windows 2 apart along W: straight from the rows
# (cp_fmax2_item_f32: each row's columns first, then the rows in order)
# ---------------------------------------------------------------------------

FMAX_ROW_CASES = [
    (2, (1, 5, 23, 70), "fixed", dict(kernel_size=3, stride=2, padding=1)),   # 35 a row
    (2, (3, 4, 10, 64), "fixed", dict(kernel_size=2)),                        # no shared rows
    (2, (2, 3, 9, 67), "fixed", dict(kernel_size=2, ceil_mode=True)),         # 1-column edge
    (2, (2, 3, 11, 75), "fixed", dict(kernel_size=(3, 4), stride=2, padding=(1, 2))),
    (2, (2, 2, 13, 66), "fixed", dict(kernel_size=(5, 1), stride=(1, 2))),   # rows in 5 windows
    (2, (1, 3, 15, 68), "fixed", dict(kernel_size=3, stride=2, padding=1, dilation=(2, 1))),
    (2, (1, 2, 9, 200), "fixed", dict(kernel_size=3, stride=2, ceil_mode=True)),
    (2, (2, 3, 30, 96), "adaptive", dict(output_size=(15, 48))),
    (2, (2, 3, 17, 70), "adaptive", dict(output_size=(5, 35))),
    (1, (4, 5, 100), "fixed", dict(kernel_size=3, stride=2, padding=1)),
    (3, (2, 3, 6, 8, 64), "fixed", dict(kernel_size=2)),
    (3, (1, 2, 7, 9, 66), "fixed", dict(kernel_size=3, stride=2, padding=1)),
    (3, (1, 2, 6, 6, 64), "adaptive", dict(output_size=(3, 3, 32))),
]


def _fmax_zoo(shape, seed):
    # ties (the first tap wins), +0 against -0, NaNs of two payloads (the last
    # one wins), -inf windows, +inf
    x = _nasty(np.random.default_rng(seed), shape, np.float32)
    flat = x.reshape(-1)
    flat[5::11] = np.round(flat[5::11])
    flat[2::13] = 0.0
    flat[4::17] = -0.0
    flat[9::41] = np.array([0x7FC00123], np.uint32).view(np.float32)[0]
    x[0, 1] = -np.inf
    return x


@pytest.mark.parametrize("rank,shape,kind,kw", FMAX_ROW_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channels_first_max_from_rows_matches_torch(monkeypatch, rank, shape, kind, kw,
                                                    threads):
    _max_like_torch(monkeypatch, rank, kind, _fmax_zoo(shape, sum(shape) + threads), kw, threads)


def _levels_agree(rank, kind, op, x, kw):
    # the same bits at ISA levels 2 (from the rows), 1 and 0 (row lanes or
    # row sweeps); max: values and indices
    name = f"adaptive_{op}_pool{rank}d" if kind == "adaptive" else f"{op}_pool{rank}d"
    extra = {"return_indices": True} if op == "max" else {}
    results = []
    try:
        for level in (2, 1, 0):
            _kernels.limit_window_isa(level)
            r = getattr(cypool, name)(x, **extra, **kw)
            results.append(b"".join(a.tobytes() for a in (r if op == "max" else (r,))))
    finally:
        _kernels.limit_window_isa(2)
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("rank,shape,kind,kw", FMAX_ROW_CASES[::3])
def test_channels_first_max_from_rows_agrees_at_every_isa_level(rank, shape, kind, kw):
    _levels_agree(rank, kind, "max", _fmax_zoo(shape, 7), kw)


FMAX_GATHER_CASES = [
    (2, (3, 37, 14, 14), "adaptive", dict(output_size=7)),
    (2, (2, 21, 8, 8), "fixed", dict(kernel_size=2)),
    (2, (1, 19, 12, 12), "fixed", dict(kernel_size=3, stride=3)),
    (2, (2, 9, 29, 29), "fixed", dict(kernel_size=3, stride=2)),
    (2, (2, 11, 10, 13), "fixed", dict(kernel_size=(2, 3), stride=(2, 3), dilation=(2, 1))),
    (1, (3, 17, 20), "fixed", dict(kernel_size=2)),
    (3, (2, 7, 4, 6, 8), "fixed", dict(kernel_size=2)),
    (3, (1, 9, 6, 6, 6), "adaptive", dict(output_size=3)),
]


@pytest.fixture(params=[True, False], ids=["gathers", "no-gathers"])
def gathers(request):
    # the AVX-512 gather and scatter kernels run (as on Intel's cores) or
    # not (as on AMD's, where the CPU's default skips them), on any machine
    _kernels.use_gathers(int(request.param))
    yield request.param
    _kernels.use_gathers(-1)


@pytest.mark.parametrize("rank,shape,kind,kw", FMAX_GATHER_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channels_first_max_of_whole_windows_by_gathers(monkeypatch, rank, shape, kind, kw,
                                                        threads, gathers):
    # small planes whose windows are all whole: one gather a tap (ISA level
    # 2, where gathers pay), row lanes otherwise; both PyTorch's bits
    _max_like_torch(monkeypatch, rank, kind, _fmax_zoo(shape, sum(shape) + threads), kw, threads,
                    levels=(2, 1))


# ---------------------------------------------------------------------------
# Channels-first float32 2 x 2 windows 2 apart (max_pool2d(2), adaptive
# halvings): 8 outputs a vector however short the rows (cp_fmax22_rows_f32),
# the gradient written densely (cp_fmax22_back_f32).  Short rows read and
# write whole vectors except in a thread's last row: 1 to 3 threads move
# that row around; odd H and W leave rows and columns no window reads.
# ---------------------------------------------------------------------------

PAIR_CASES = [
    ((3, 37, 14, 14), "adaptive", dict(output_size=7)),           # the ResNet head's 7 a row
    ((2, 5, 15, 17), "fixed", dict(kernel_size=2)),               # a spare row and column
    ((2, 3, 6, 16), "fixed", dict(kernel_size=2)),                # 8 a row: one whole vector
    ((1, 4, 10, 18), "fixed", dict(kernel_size=2, stride=2)),     # 9: a vector and 1
    ((2, 3, 8, 35), "fixed", dict(kernel_size=2)),                # 17, and a spare column
    ((1, 2, 4, 64), "adaptive", dict(output_size=(2, 32))),
    ((5, 2, 2, 2), "fixed", dict(kernel_size=2)),                 # 1 output a plane
    ((1, 3, 1, 8), "fixed", dict(kernel_size=(1, 2))),            # not 2 x 2: other kernels
    ((7, 3, 4, 2), "fixed", dict(kernel_size=2)),                 # rows shorter than a vector's
    ((3, 5, 7, 6), "fixed", dict(kernel_size=2)),                 # ... spill: many rows on
    ((4, 3, 5, 5), "fixed", dict(kernel_size=2)),
]


def _torch_max_grad(x, name, kw, seed):
    # torch's max pool `name` of x with indices, and its backward of a
    # gradient g with -0s (0 + -0 is +0, as the scatter from +0) and NaNs:
    # (the input tensor, holding the gradient; the indices; g)
    t = torch.from_numpy(x).requires_grad_(True)
    tv, ti = getattr(F, name)(t, return_indices=True, **kw)
    g = np.random.default_rng(seed).standard_normal(tv.shape).astype(np.float32)
    g.reshape(-1)[::5] = -0.0
    g.reshape(-1)[3::7] = np.nan
    tv.backward(torch.from_numpy(g))
    return t, ti, g


@pytest.mark.parametrize("shape,kind,kw", PAIR_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channels_first_pair_windows_match_torch(monkeypatch, shape, kind, kw, threads):
    x = _fmax_zoo(shape, sum(shape) + threads)
    _max_like_torch(monkeypatch, 2, kind, x, kw, threads, levels=(2, 1))
    name = f"adaptive_max_pool2d" if kind == "adaptive" else "max_pool2d"
    t, ti, g = _torch_max_grad(x, name, kw, threads)
    bk = {k: v for k, v in kw.items() if k != "output_size"}
    back = (lambda i: cypool.adaptive_max_pool2d_backward(g, i, x.shape)) \
        if kind == "adaptive" else (lambda i: cypool.max_pool2d_backward(g, i, x.shape, **bk))
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        for level in (2, 1):
            _kernels.limit_window_isa(level)
            assert back(ti.numpy()).tobytes() == t.grad.numpy().tobytes()
            # indices outside their windows (any position in the plane, as
            # PyTorch's scatter takes them) and -1 (no input): the scatter's sums
            i2 = ti.numpy().copy()
            i2.reshape(-1)[-1] = 0
            i2.reshape(-1)[0] = -1
            i2.reshape(-1)[len(i2.reshape(-1)) // 2] = shape[2] * shape[3] - 1
            assert back(i2).tobytes() == _scatter_sums(g, i2, shape).tobytes()
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)


@pytest.mark.parametrize("shape", [(7, 3, 4, 2), (3, 5, 7, 6), (2, 3, 14, 14), (2, 2, 6, 35)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pair_windows_write_nothing_past_their_results(monkeypatch, shape, threads):
    # whole-vector stores of short rows stay inside the results: out= views
    # of longer buffers keep the sentinels that follow them
    x = _fmax_zoo(shape, threads)
    osh = shape[:2] + (shape[2] // 2, shape[3] // 2)
    n, isz = int(np.prod(osh)), int(np.prod(shape))
    vb, ib, gb = np.full(n + 64, 7.0, np.float32), np.full(n + 64, 7, np.int64), \
        np.full(isz + 64, 7.0, np.float32)
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        v, i = cypool.max_pool2d(x, 2, return_indices=True,
                                 out=(vb[:n].reshape(osh), ib[:n].reshape(osh)))
        gi = cypool.max_pool2d_backward(np.ones(osh, np.float32), i, x.shape, kernel_size=2,
                                        out=gb[:isz].reshape(shape))
    finally:
        cypool.set_num_threads(before)
    assert np.shares_memory(v, vb) and np.shares_memory(i, ib) and np.shares_memory(gi, gb)
    tv, ti = F.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    assert v.tobytes() == tv.numpy().tobytes() and np.array_equal(i, ti.numpy())
    assert gi.sum() == n
    assert (vb[n:] == 7).all() and (ib[n:] == 7).all() and (gb[isz:] == 7).all()


AVG_PAIR_CASES = [
    ((3, 37, 14, 14), "adaptive", dict(output_size=7)),           # (g / 2) / 2
    ((2, 5, 15, 17), "fixed", dict(kernel_size=2)),               # 0 + g / 4
    ((2, 3, 6, 16), "fixed", dict(kernel_size=2, count_include_pad=False)),
    ((1, 4, 10, 18), "fixed", dict(kernel_size=2, divisor_override=3)),
    ((2, 3, 8, 35), "fixed", dict(kernel_size=2, divisor_override=-4)),
    ((1, 2, 4, 64), "adaptive", dict(output_size=(2, 32))),
    ((7, 3, 4, 2), "fixed", dict(kernel_size=2)),
    ((2, 4, 56, 56), "fixed", dict(kernel_size=2, stride=2)),     # rows of 14 lines: streamed
    ((2, 32, 6, 8), "fixed", dict(kernel_size=2)),                # channels-last: whole lines
    ((1, 64, 4, 6), "adaptive", dict(output_size=(2, 3))),
    ((1, 48, 5, 7), "fixed", dict(kernel_size=2)),                # a spare row and column
]


@pytest.mark.parametrize("shape,kind,kw", AVG_PAIR_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("level", [2, 1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pair_average_backward_matches_torch(monkeypatch, shape, kind, kw, threads, stream,
                                             level, channels_last):
    # one term an input, scaled as the forward divides (multiplying by 1/2
    # and 1/4 is exact: subnormal gradients check it), written densely and
    # streamed whole lines or not; level 1: the gathers.  Sentinels after an
    # out= view stay.
    rng = np.random.default_rng(sum(shape) + threads)
    name = "adaptive_avg_pool2d" if kind == "adaptive" else "avg_pool2d"
    t = torch.zeros(shape, dtype=torch.float32, requires_grad=True)
    tv = getattr(F, name)(t, **kw)
    g = rng.standard_normal(tuple(tv.shape)).astype(np.float32)
    flat = g.reshape(-1)
    flat[::5] = -0.0
    flat[3::11] = np.nan
    # subnormal, of either sign: quotients that round to -0 must come out +0
    flat[1::7] = np.float32(1.4e-45) * rng.integers(-8, 9, size=flat[1::7].shape)
    flat[2::13] = np.inf
    tv.backward(torch.from_numpy(g))
    want = t.grad.numpy()
    bk = {k: v for k, v in kw.items() if k != "output_size"}
    if channels_last:                                   # (N, H, W, C) arrays
        g = np.ascontiguousarray(g.transpose(0, 2, 3, 1))
        want = np.ascontiguousarray(want.transpose(0, 2, 3, 1))
        shape = want.shape
    n = int(np.prod(shape))
    raw = np.full(n + 96, 7.0, np.float32)          # buf: 64-byte aligned, as the cache's
    buf = raw[(-raw.ctypes.data % 64) // 4:][:n + 64]
    with _run_at(monkeypatch, threads, level, STREAM_BYTES=0 if stream else 1 << 60):
        if kind == "adaptive":
            got = cypool.adaptive_avg_pool2d_backward(g, shape, out=buf[:n].reshape(shape),
                                                      channels_last=channels_last)
        else:
            got = cypool.avg_pool2d_backward(g, shape, out=buf[:n].reshape(shape),
                                             channels_last=channels_last, **bk)
    assert np.shares_memory(got, buf)
    assert got.tobytes() == want.tobytes()
    assert (buf[n:] == 7).all()


@pytest.mark.parametrize("shape,kind,kw", AVG_PAIR_CASES + [
    ((2, 3, 9, 33), "fixed", dict(kernel_size=2)),                # 16 + 0 outputs, a tail
    ((5, 3, 4, 34), "fixed", dict(kernel_size=2)),                # 17: a 1-output chunk
    ((3, 2, 2, 2), "fixed", dict(kernel_size=2)),                 # one output a plane
    ((4, 9, 12, 100), "adaptive", dict(output_size=(6, 50))),     # 2 ranges a thread...
])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("level", [2, 1])
def test_pair_average_forward_matches_torch(monkeypatch, shape, kind, kw, threads, stream,
                                            level):
    # channels-first 2 x 2 windows 2 apart, 16 outputs a vector (level 2),
    # summed in PyTorch's order, operands too, and divided as it divides (-0, NaN, inf,
    # huge, subnormal and -min-subnormal taps: quotients that round to -0
    # stay -0 in adaptive averages and become +0 in fixed ones), staged and
    # streamed in whole lines or not; the output an out= view at every
    # offset from a line, sentinels around it untouched
    rng = np.random.default_rng(sum(shape) + threads)
    name = "adaptive_avg_pool2d" if kind == "adaptive" else "avg_pool2d"
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[::5] = -0.0
    flat[3::11] = np.nan
    flat[1::7] = np.float32(1.4e-45) * rng.integers(-8, 9, size=flat[1::7].shape)
    flat[2::13] = np.inf
    flat[4::17] = np.float32(3e38)
    flat[6::9] = np.array([0x7FC00123], np.uint32).view(np.float32)[0]    # NaN payloads:
    flat[7::9] = np.array([0xFFC00456], np.uint32).view(np.float32)[0]    # the first wins
    want = getattr(F, name)(torch.from_numpy(x), **kw).numpy()
    n = want.size
    for lead in (0, 1, 5, 15):
        raw = np.full(n + 128, 7.0, np.float32)
        buf = raw[(-raw.ctypes.data % 64) // 4:][:n + 64]
        with _run_at(monkeypatch, threads, level, STREAM_BYTES=0 if stream else 1 << 60):
            got = getattr(cypool, name)(x, out=buf[lead:lead + n].reshape(want.shape), **kw)
        assert np.shares_memory(got, buf)
        assert got.tobytes() == want.tobytes()
        assert (buf[:lead] == 7).all() and (buf[lead + n:] == 7).all()


DISJOINT_CASES = [
    # channels-first shape, kind, arguments: windows that share no input
    ((3, 5, 48, 32), "adaptive", dict(output_size=(3, 2))),       # 16 x 16 bins
    ((2, 3, 21, 40), "fixed", dict(kernel_size=(3, 4))),           # floor: rows, columns spare
    ((2, 4, 20, 33), "fixed", dict(kernel_size=3, stride=5)),      # gaps between windows
    ((1, 6, 17, 34), "fixed", dict(kernel_size=4, padding=2)),     # clipped windows
    ((1, 6, 17, 34), "fixed", dict(kernel_size=4, padding=2, count_include_pad=False)),
    ((2, 3, 16, 48), "fixed", dict(kernel_size=4, divisor_override=3)),
    ((1, 48, 12, 20), "adaptive", dict(output_size=(3, 4))),       # C = 48: whole lines
    ((1, 256, 4, 64), "adaptive", dict(output_size=(2, 4))),       # 64 KiB rows
]


@pytest.mark.parametrize("shape,kind,kw", DISJOINT_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_disjoint_average_backward_matches_torch(monkeypatch, shape, kind, kw, dtype, threads,
                                                 stream, channels_last):
    # each band of input rows one row, built once and copied (streamed or
    # not), batch 1 split in parts of bands; torch autograd's bits with -0,
    # NaN, inf and subnormal gradients; sentinels after an out= view stay
    rng = np.random.default_rng(sum(shape) + threads)
    name = "adaptive_avg_pool2d" if kind == "adaptive" else "avg_pool2d"
    t = torch.zeros(shape, dtype=torch.from_numpy(np.zeros(1, dtype)).dtype,
                    requires_grad=True)
    tv = getattr(F, name)(t, **kw)
    g = rng.standard_normal(tuple(tv.shape)).astype(dtype)
    flat = g.reshape(-1)
    flat[::5] = -0.0
    flat[3::11] = np.nan
    flat[2::13] = np.inf
    flat[1::7] = np.finfo(dtype).smallest_subnormal * rng.integers(-8, 9, size=flat[1::7].shape)
    tv.backward(torch.from_numpy(g))
    want = t.grad.numpy()
    if channels_last:
        g = np.ascontiguousarray(g.transpose(0, 2, 3, 1))
        want = np.ascontiguousarray(want.transpose(0, 2, 3, 1))
    n = int(np.prod(shape))
    raw = np.full(n + 64 + 64, 7, dtype)
    buf = raw[(-raw.ctypes.data % 64) // raw.itemsize:][:n + 16]
    bk = {k: v for k, v in kw.items() if k != "output_size"}
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    monkeypatch.setattr(_cpu, "STREAM_BYTES", 0 if stream else 1 << 60)
    try:
        cypool.set_num_threads(threads)
        out = buf[:n].reshape(want.shape)
        if kind == "adaptive":
            got = cypool.adaptive_avg_pool2d_backward(g, want.shape, out=out,
                                                      channels_last=channels_last)
        else:
            got = cypool.avg_pool2d_backward(g, want.shape, out=out,
                                             channels_last=channels_last, **bk)
    finally:
        cypool.set_num_threads(before)
    assert np.shares_memory(got, buf)
    assert got.tobytes() == want.tobytes()
    assert (buf[n:] == 7).all()


# ---------------------------------------------------------------------------
# Channels-first float32 3 x 3 windows 2 apart, padded by 1 (the ResNet
# stem): each input row reduced once (cp_fmax32_rows_f32), the first output
# of each row starting its lane at column 0 (W = 1: tap by tap), items of
# output rows (1-3 threads move their edges), rows stored in whole vectors
# inside the items
# ---------------------------------------------------------------------------

STEM = dict(kernel_size=3, stride=2, padding=1)
STEM_CASES = [
    (2, 5, 20, 20),
    (1, 3, 21, 20),         # a bottom row of windows clipped to 2 rows
    (1, 2, 20, 21),         # the last column's window clipped: other kernels
    (2, 3, 9, 40),          # 20 a row: a whole vector and 4
    (3, 4, 2, 2),
    (2, 3, 1, 1),
    (1, 2, 2, 64),          # 32 a row, 1 output row
    (1, 7, 33, 34),
]


@pytest.mark.parametrize("shape", STEM_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channels_first_stem_windows_match_torch(monkeypatch, shape, threads):
    x = _fmax_zoo(shape, sum(shape) + threads) if shape[1] > 1 else \
        np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    _max_like_torch(monkeypatch, 2, "fixed", x, STEM, threads, levels=(2, 1))


@pytest.mark.parametrize("shape", [(2, 3, 12, 40), (1, 2, 9, 64), (2, 2, 7, 2), (1, 3, 8, 1)])
@pytest.mark.parametrize("threads", [1, 3])
def test_stem_first_output_never_takes_the_column_before_its_row(monkeypatch, shape, threads):
    # the first window's lane loads the float before its row (the last of
    # the row above, or of the plane before): huge or NaN there, and ties
    # across the first window, must give torch's values and indices
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    x[..., ::2, -1] = 3e38
    x[..., 1::2, -1] = np.nan
    x[..., ::3, :2] = 1.5                     # ties inside the first windows
    _max_like_torch(monkeypatch, 2, "fixed", x, STEM, threads, levels=(2, 1))
    x[..., :, -1] = 3e38                      # no NaN anywhere
    _max_like_torch(monkeypatch, 2, "fixed", x, STEM, threads, levels=(2, 1))


@pytest.mark.parametrize("shape", [(1, 3, 21, 20), (2, 3, 9, 40), (3, 4, 2, 2), (1, 7, 33, 34),
                                   (1, 2, 70, 60), (2, 2, 9, 64), (1, 2, 5, 1)])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True])
def test_stem_windows_write_nothing_past_their_results(monkeypatch, shape, threads, stream):
    # out= views of longer buffers keep the sentinels that follow them;
    # streamed (non-temporal) rows give the same bits: rows of whole lines
    # (32 outputs) in place, others through the stage (256 outputs: 8 rows
    # of 30 a chunk, 5 chunks; 17 rows of 17 in two)
    x = _fmax_zoo(shape, threads)
    tv, ti = F.max_pool2d(torch.from_numpy(x), return_indices=True, **STEM)
    osh = tuple(tv.shape)
    n = int(np.prod(osh))
    vb, ib = np.full(n + 64, 7.0, np.float32), np.full(n + 64, 7, np.int64)
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    monkeypatch.setattr(_cpu, "STREAM_BYTES", 0 if stream else 1 << 60)
    try:
        cypool.set_num_threads(threads)
        v, i = cypool.max_pool2d(x, return_indices=True,
                                 out=(vb[:n].reshape(osh), ib[:n].reshape(osh)), **STEM)
    finally:
        cypool.set_num_threads(before)
    assert np.shares_memory(v, vb) and np.shares_memory(i, ib)
    assert v.tobytes() == tv.numpy().tobytes() and np.array_equal(i, ti.numpy())
    assert (vb[n:] == 7).all() and (ib[n:] == 7).all()


def test_windows_wholly_in_the_padding_are_not_gathered():
    # every window along H in the padding: the lowest value and index -1 (the
    # reference's convention; torch's index there is a position outside the
    # windows), at every ISA level
    from cypool import reference
    x = _fmax_zoo((1, 5, 1, 16), 1)
    kw = dict(stride=2, padding=(1, 0), dilation=(2, 1), return_indices=True)
    rv, ri = reference.fixed_pool(x, 2, "max", 2, **kw)
    try:
        for level in (2, 1):
            _kernels.limit_window_isa(level)
            v, i = cypool.max_pool2d(x, 2, **kw)
            assert v.tobytes() == rv.tobytes() and np.array_equal(i, ri)
    finally:
        _kernels.limit_window_isa(2)


FAVG_ROW_CASES = [
    (2, (3, 4, 10, 64), "fixed", dict(kernel_size=2)),
    (2, (1, 5, 23, 70), "fixed", dict(kernel_size=3, stride=2, padding=1)),
    (2, (1, 5, 23, 70), "fixed", dict(kernel_size=3, stride=2, padding=1,
                                      count_include_pad=False)),
    (2, (2, 3, 9, 67), "fixed", dict(kernel_size=2, ceil_mode=True)),
    (2, (2, 3, 11, 75), "fixed", dict(kernel_size=(3, 4), stride=2, padding=(1, 2),
                                      ceil_mode=True, count_include_pad=False)),
    (2, (2, 2, 13, 66), "fixed", dict(kernel_size=(5, 1), stride=(1, 2), divisor_override=3)),
    (2, (2, 3, 30, 96), "adaptive", dict(output_size=(15, 48))),
    (2, (2, 3, 17, 70), "adaptive", dict(output_size=(5, 35))),
    (1, (4, 5, 100), "fixed", dict(kernel_size=3, stride=2, padding=1)),
    (3, (2, 3, 6, 8, 64), "fixed", dict(kernel_size=2)),
    (3, (1, 2, 7, 9, 66), "fixed", dict(kernel_size=3, stride=2, padding=1,
                                        count_include_pad=False)),
    (3, (1, 2, 6, 6, 64), "adaptive", dict(output_size=(3, 3, 32))),
]


@pytest.mark.parametrize("rank,shape,kind,kw", FAVG_ROW_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channels_first_average_from_rows_matches_torch(monkeypatch, rank, shape, kind, kw,
                                                        threads):
    # sums from +0 in PyTorch's order (-0 windows give +0), NaN and inf windows
    x = _fmax_zoo(shape, sum(shape) + threads)
    x[0, 0, ..., :5] = -0.0
    name = f"adaptive_avg_pool{rank}d" if kind == "adaptive" else f"avg_pool{rank}d"
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        got = getattr(cypool, name)(x, **kw)
    finally:
        cypool.set_num_threads(before)
    want = getattr(F, name)(torch.from_numpy(x), **kw).numpy()
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("rank,shape,kind,kw", FAVG_ROW_CASES[::3])
def test_channels_first_average_from_rows_agrees_at_every_isa_level(rank, shape, kind, kw):
    _levels_agree(rank, kind, "avg", _fmax_zoo(shape, 11), kw)


def test_channels_first_pools_from_rows_match_the_reference():
    # the slow NumPy reference, on rows of 2**12 + 1 columns (many vectors);
    # its averages sum in float64, so they are compared to a tolerance
    from cypool import reference
    x = _fmax_zoo((1, 2, 5, 2**12 + 1), 3)
    v, i = cypool.max_pool2d(x, 3, 2, 1, return_indices=True)
    rv, ri = reference.fixed_pool(x, 3, "max", 2, stride=2, padding=1, return_indices=True)
    assert v.tobytes() == rv.tobytes() and np.array_equal(i, ri)
    a = cypool.avg_pool2d(x, 3, 2, 1)
    ra = reference.fixed_pool(x, 3, "avg", 2, stride=2, padding=1)
    np.testing.assert_allclose(a, ra, rtol=1e-6, atol=1e-6, equal_nan=True)


# ---------------------------------------------------------------------------
# Channels-last average backward, rows of their own: scaled output rows kept
# in a ring (_cl_back_rows_item, cp_cl_gather_row_f32)
# ---------------------------------------------------------------------------

CL_BACK_CASES = [
    (2, (2, 70, 9, 11), False, dict(kernel_size=3, stride=1, padding=1,
                                    count_include_pad=False)),        # 64 + 6 lanes
    (2, (1, 13, 12, 10), False, dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0),
                                     ceil_mode=True, divisor_override=5)),
    (2, (3, 129, 7, 8), False, dict(kernel_size=3, stride=2, padding=1)),
    (2, (2, 20, 11, 9), True, dict(output_size=(5, 4))),
    (1, (4, 33, 40), False, dict(kernel_size=4, stride=1, padding=2)),
    (3, (1, 17, 5, 6, 7), False, dict(kernel_size=3, stride=1, padding=1)),
    (3, (2, 16, 6, 5, 4), True, dict(output_size=(3, 4, 3))),
]


@pytest.mark.parametrize("rank,shape,adaptive,kw", CL_BACK_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channels_last_avg_backward_rows_match_torch(monkeypatch, rank, shape, adaptive, kw,
                                                     dtype, threads):
    rng = np.random.default_rng(sum(shape) + threads)
    x = rng.standard_normal(shape).astype(dtype)
    y = (getattr(F, f"adaptive_avg_pool{rank}d")(torch.from_numpy(x), kw["output_size"])
         if adaptive else getattr(F, f"avg_pool{rank}d")(torch.from_numpy(x), **kw))
    g = rng.standard_normal(tuple(y.shape)).astype(dtype)
    g.reshape(-1)[::17] = -0.0
    g[0, 0] = -0.0                          # sums of -0.0 only: +0.0 (from +0.0)
    g.reshape(-1)[5::23] = np.nan
    want = _torch_avg_grad(x, g, rank, adaptive, kw)
    gl = np.ascontiguousarray(np.moveaxis(g, 1, -1))
    shape_l = (shape[0],) + shape[2:] + (shape[1],)
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    results = []
    try:
        cypool.set_num_threads(threads)
        for level in (2, 1, 0):
            _kernels.limit_window_isa(level)
            results.append(_cypool_grad(gl, shape_l, rank, adaptive, kw, channels_last=True))
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)
    for got in results:
        assert np.moveaxis(got, -1, 1).tobytes() == want.tobytes()


# ---------------------------------------------------------------------------
# Integer max pooling without indices: window rows reduced first
# ---------------------------------------------------------------------------

INT_MAX_CASES = [
    (2, "fixed", dict(kernel_size=2)),
    (2, "fixed", dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    (2, "fixed", dict(kernel_size=(2, 4), stride=(1, 3), padding=(1, 2))),
    (2, "adaptive", dict(output_size=(5, 3))),
    (1, "fixed", dict(kernel_size=3, stride=1, padding=1)),
    (3, "fixed", dict(kernel_size=2, stride=(1, 2, 2))),
    (3, "adaptive", dict(output_size=(2, 3, 4))),
]


@pytest.mark.parametrize("rank,kind,kw", INT_MAX_CASES)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32",
                                   "int64", "uint64"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_integer_values_only_max_matches_reference(rank, kind, kw, dtype, channels_last):
    from cypool import reference

    info = np.iinfo(dtype)
    shape = (2, 3, 7, 9, 8)[:rank + 2] if channels_last else (2, 3, 9, 8, 11)[:rank + 2]
    x = np.random.default_rng(rank).integers(info.min, info.max, shape, dtype=dtype,
                                             endpoint=True)
    x.reshape(-1)[::5] = info.min                 # windows of nothing but the lowest value
    x.reshape(-1)[3::13] = info.max
    name = f"adaptive_max_pool{rank}d" if kind == "adaptive" else f"max_pool{rank}d"
    got = getattr(cypool, name)(x, channels_last=channels_last, **kw)
    with_indices, _ = getattr(cypool, name)(x, return_indices=True, channels_last=channels_last,
                                            **kw)
    if kind == "adaptive":
        want = reference.adaptive_pool(x, kw["output_size"], "max", rank,
                                       channels_last=channels_last)
    else:
        rest = {k: v for k, v in kw.items() if k != "kernel_size"}
        want = reference.fixed_pool(x, kw["kernel_size"], "max", rank,
                                    channels_last=channels_last, **rest)
    want = want[0] if isinstance(want, tuple) else want
    assert got.dtype == x.dtype and got.shape == want.shape
    assert np.array_equal(got, want) and np.array_equal(got, with_indices)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(1, 2), ceil_mode=True)])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("channels", [2, 3, 5, 7])
def test_channels_last_byte_max_picks_by_permutes(kw, dtype, channels):
    # rows of 203 pixels of 2-7 bytes: every other pixel's bytes picked by
    # byte permutes (AVX-512 VBMI, ISA level 2), 8-byte copies otherwise
    from cypool import reference

    info = np.iinfo(dtype)
    x = np.random.default_rng(channels).integers(info.min, info.max, (2, 4, 203, channels),
                                                 dtype=dtype, endpoint=True)
    results = []
    try:
        for level in (2, 1, 0):
            _kernels.limit_window_isa(level)
            results.append(cypool.max_pool2d(x, channels_last=True, **kw))
    finally:
        _kernels.limit_window_isa(2)
    rest = {k: v for k, v in kw.items() if k != "kernel_size"}
    want = reference.fixed_pool(x, kw["kernel_size"], "max", 2, channels_last=True, **rest)
    for got in results:
        assert got.dtype == x.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("rank,shape,kind,kw", ROW_LANE_CASES + [
    (2, (1, 20, 23, 53), "adaptive", dict(output_size=(7, 5))),   # rows of 212 bytes
    (3, (1, 17, 7, 9, 40), "adaptive", dict(output_size=(3, 4, 2))),   # runs in D and H
    (1, (2, 9, 100), "fixed", dict(kernel_size=3, stride=2, padding=1)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("stream", [False, True])
def test_channels_first_backward_row_lanes_match_torch(monkeypatch, rank, shape, kind, kw,
                                                       dtype, threads, stream):
    # the average backward of 16+ planes: scaled gradients transposed into
    # lanes; streamed (each plane's run of rows written by whole lines, the
    # partial lines at its ends plainly) or not, into an out= view at
    # several offsets from a cache line, sentinels around it untouched
    adaptive = kind == "adaptive"
    rng = np.random.default_rng(sum(shape) + 1)
    x = rng.standard_normal(shape).astype(dtype)
    y = (getattr(cypool, f"adaptive_avg_pool{rank}d") if adaptive
         else getattr(cypool, f"avg_pool{rank}d"))(x, **kw)
    g = rng.standard_normal(y.shape).astype(dtype)
    g.reshape(-1)[::4] = -0.0           # sums of nothing but -0.0 terms stay +0.0
    want = _torch_avg_grad(x, g, rank, adaptive, kw)
    fn = getattr(cypool, f"{'adaptive_' if adaptive else ''}avg_pool{rank}d_backward")
    args = {} if adaptive else kw
    n = want.size
    for lead in (0, 3, 8):
        raw = np.full(n + 64, 7.0, dtype)
        buf = raw[(-raw.ctypes.data % 64) // raw.itemsize:][:n + 32]
        with _run_at(monkeypatch, threads, 2, STREAM_BYTES=0 if stream else 1 << 60):
            got = fn(g, shape, out=buf[lead:lead + n].reshape(shape), **args)
        assert np.shares_memory(got, buf)
        assert got.tobytes() == want.tobytes(), lead
        assert (buf[:lead] == 7).all() and (buf[lead + n:] == 7).all()


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(1, 3), stride=2, dilation=2, ceil_mode=True),
                                dict(kernel_size=(2, 4), stride=(3, 2), padding=(0, 2)),
                                dict(kernel_size=2, padding=1),
                                dict(kernel_size=(3, 2), stride=2, dilation=(1, 3), padding=1,
                                     ceil_mode=True)])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint32", "int64"])
def test_integer_values_only_max_rows_of_windows_two_apart(kw, dtype):
    # 16+ output columns whose windows start 2 apart: picked by a strided copy
    # (windows of 2 columns: the larger of the pair, straight from the rows)
    from cypool import reference

    info = np.iinfo(dtype)
    x = np.random.default_rng(3).integers(info.min, info.max, (2, 3, 6, 77), dtype=dtype,
                                          endpoint=True)
    x[0, 0, :, ::3] = info.max
    got = cypool.max_pool2d(x, **kw)
    rest = {k: v for k, v in kw.items() if k != "kernel_size"}
    want = reference.fixed_pool(x, kw["kernel_size"], "max", 2, **rest)
    assert got.shape[-1] >= 16 and np.array_equal(got, want)


@pytest.mark.parametrize("rank, kw", [
    (2, dict(kernel_size=2)), (2, dict(kernel_size=(3, 2), stride=(1, 2))),
    (2, dict(kernel_size=2, dilation=(2, 1), padding=(1, 0))), (3, dict(kernel_size=2))])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("width", [166, 129, 12])
@pytest.mark.parametrize("level", [2, 1])
def test_byte_max_pairs_straight_from_the_rows(rank, kw, dtype, width, level):
    # 1-byte channels-first windows of 2 whole adjacent columns 2 apart: both
    # reductions from the rows in vectors of 64 outputs (a tail masked), with
    # AVX-512BW at level 2, through a row buffer otherwise
    from cypool import reference

    info = np.iinfo(dtype)
    rng = np.random.default_rng(width + rank)
    x = rng.integers(info.min, info.max, (2, 3) + (5,) * (rank - 1) + (width,), dtype=dtype,
                     endpoint=True)
    x[0, 0, ..., ::3] = info.max        # maxima at even and odd columns, in every row
    x[1, 2, ..., 1::5] = info.min
    try:
        _kernels.limit_window_isa(level)
        got = getattr(cypool, f"max_pool{rank}d")(x, **kw)
    finally:
        _kernels.limit_window_isa(2)
    rest = {k: v for k, v in kw.items() if k != "kernel_size"}
    want = reference.fixed_pool(x, kw["kernel_size"], "max", rank, **rest)
    assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 4), stride=(3, 2), padding=(0, 2)),
                                dict(kernel_size=2, padding=1),
                                dict(kernel_size=(3, 2), stride=2, dilation=(1, 3), padding=1,
                                     ceil_mode=True)])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32"])
@pytest.mark.parametrize("channels", [2, 3, 5])
@pytest.mark.parametrize("level", [2, 1])
def test_integer_values_only_max_channels_last_small_outputs(kw, dtype, channels, level):
    # channels-last outputs of under 8 bytes, windows 2 apart: 8-byte copies,
    # or for bytes with AVX-512 VBMI (level 2) byte permutes, of both taps
    # straight from the rows when windows have 2 columns
    from cypool import reference

    info = np.iinfo(dtype)
    x = np.random.default_rng(channels).integers(info.min, info.max, (2, 6, 77, channels),
                                                 dtype=dtype, endpoint=True)
    x[0, :, ::3, 0] = info.max          # maxima in both taps' columns
    try:
        _kernels.limit_window_isa(level)
        got = cypool.max_pool2d(x, channels_last=True, **kw)
    finally:
        _kernels.limit_window_isa(2)
    rest = {k: v for k, v in kw.items() if k != "kernel_size"}
    want = reference.fixed_pool(x, kw["kernel_size"], "max", 2, channels_last=True, **rest)
    assert got.shape[-2] >= 16 and np.array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows_fall_back_to_plane_lanes(dtype):
    # rows too long for the row lanes' ring (W * 64 bytes over 1 MiB): the
    # transposed-block plane lanes, still PyTorch's bits
    x = _nasty(np.random.default_rng(5), (2, 9, 17000), dtype)
    xf = np.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0)
    t, tf = torch.from_numpy(x), torch.from_numpy(xf)
    v, i = cypool.max_pool1d(x, 3, 2, 1, return_indices=True)
    tv, ti = F.max_pool1d(t, 3, 2, 1, return_indices=True)
    assert v.tobytes() == tv.numpy().tobytes() and np.array_equal(i, ti.numpy())
    a = cypool.avg_pool1d(xf, 4, 3, 2, count_include_pad=False)
    assert a.tobytes() == F.avg_pool1d(tf, 4, 3, 2, count_include_pad=False).numpy().tobytes()
    a = cypool.adaptive_avg_pool1d(xf, 1000)
    assert a.tobytes() == F.adaptive_avg_pool1d(tf, 1000).numpy().tobytes()


# ---------------------------------------------------------------------------
# Channels-first float32 2x2 and 3x3 averages of stride 1: zero rows around
# each slice, four rows at a time sharing their loads (forward and backward)
# ---------------------------------------------------------------------------

SHARED_CASES = [
    (2, (2, 3, 64, 64), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    (2, (1, 4, 13, 33), dict(kernel_size=3, stride=1, padding=1)),
    (2, (2, 2, 9, 70), dict(kernel_size=3, stride=1, padding=0)),
    (2, (1, 3, 10, 31), dict(kernel_size=2, stride=1, padding=1, count_include_pad=False)),
    (2, (2, 2, 7, 16), dict(kernel_size=2, stride=1, padding=0, ceil_mode=True)),
    (2, (1, 2, 6, 17), dict(kernel_size=3, stride=1, padding=1, ceil_mode=True,
                           count_include_pad=False)),
    (3, (1, 2, 5, 9, 40), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    (3, (2, 1, 6, 8, 33), dict(kernel_size=(2, 3, 3), stride=(2, 1, 1), padding=(1, 1, 1))),
    (3, (1, 2, 4, 11, 20), dict(kernel_size=(3, 2, 2), stride=1, padding=(1, 0, 1),
                               count_include_pad=False)),
]


def _edgy(rng, shape):
    # float32 data at the edges of the fast division's safe range (+-2^-60,
    # +-2^60: sums of them stay in the range it divides exactly; +-2^-61,
    # +-2^61 are outside it) with zeros, -0.0 and windows that cancel to a
    # few ulps of 2^-60, and a block of -0.0 in the first plane (whole
    # windows of -0.0: PyTorch's sums from +0.0 give +0.0 there)
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    edge = np.float32([2.0 ** -60, -(2.0 ** -60), 2.0 ** 60, -(2.0 ** 60),
                       2.0 ** -60 * (1 + 2.0 ** -23), -(2.0 ** -60) * (1 + 2.0 ** -22)])
    flat[::5] = edge[np.arange(len(flat[::5])) % len(edge)]
    flat[2::11] = 0.0
    flat[4::13] = -0.0
    x[0, 0, ..., 1:5, 3:20] = -0.0
    return x


def _shared_like_torch(monkeypatch, rank, x, kw, threads, stream):
    # forward at `threads` threads (non-temporal stores when `stream`),
    # against torch's bits and against the kernels without AVX-512
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    if stream:
        monkeypatch.setattr(_cpu, "STREAM_BYTES", 0)
        monkeypatch.setattr(_buffers, "MIN_BYTES", 0)   # whole-line results
    name = f"avg_pool{rank}d"
    try:
        cypool.set_num_threads(threads)
        got = getattr(cypool, name)(x, **kw)
        _kernels.limit_window_isa(1)
        plain = getattr(cypool, name)(x, **kw)
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)
    want = getattr(F, name)(torch.from_numpy(x), **kw).numpy()
    return got, plain, want


@pytest.mark.parametrize("rank,shape,kw", SHARED_CASES)
@pytest.mark.parametrize("threads,stream", [(1, False), (2, True), (3, False)])
def test_shared_rows_average_matches_torch(monkeypatch, rank, shape, kw, threads, stream):
    rng = np.random.default_rng(shape[-1] + threads)
    x = _edgy(rng, shape)
    got, plain, want = _shared_like_torch(monkeypatch, rank, x, kw, threads, stream)
    assert got.tobytes() == want.tobytes() and plain.tobytes() == want.tobytes()
    # 2^-61, 2^61, subnormals, NaN and inf: every division checked
    flat = x.reshape(-1)
    flat[7::17] = np.float32(2.0 ** -61)
    flat[9::19] = np.float32(-(2.0 ** 61))
    flat[1::23] = np.float32(1e-40)
    got, plain, want = _shared_like_torch(monkeypatch, rank, x, kw, threads, stream)
    assert got.tobytes() == want.tobytes() and plain.tobytes() == want.tobytes()
    flat[3::29] = np.nan
    flat[6::31] = np.inf
    got, plain, want = _shared_like_torch(monkeypatch, rank, x, kw, threads, stream)
    assert np.array_equal(got, want, equal_nan=True) and np.isnan(got).any()
    assert np.array_equal(plain, want, equal_nan=True)


@pytest.mark.parametrize("rank,shape,kw", SHARED_CASES)
@pytest.mark.parametrize("threads,stream", [(1, False), (2, True), (3, False)])
def test_shared_rows_average_backward_matches_torch(monkeypatch, rank, shape, kw, threads,
                                                    stream):
    x = torch.zeros(shape, dtype=torch.float32, requires_grad=True)
    y = getattr(F, f"avg_pool{rank}d")(x, **kw)
    g = _edgy(np.random.default_rng(shape[-2] + threads), tuple(y.shape))
    g.reshape(-1)[3::41] = np.inf
    y.backward(torch.from_numpy(g))
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    if stream:
        monkeypatch.setattr(_cpu, "STREAM_BYTES", 0)
        monkeypatch.setattr(_buffers, "MIN_BYTES", 0)
    back = getattr(cypool, f"avg_pool{rank}d_backward")
    try:
        cypool.set_num_threads(threads)
        got = back(g, shape, **kw)
        _kernels.limit_window_isa(1)
        plain = back(g, shape, **kw)
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)
    want = x.grad.numpy()
    assert np.array_equal(got, want, equal_nan=True)
    assert got[~np.isnan(got)].tobytes() == want[~np.isnan(want)].tobytes()
    assert plain.tobytes() == got.tobytes()


# ---------------------------------------------------------------------------
# Channels-last float32 averages of fixed windows: one divisor an output,
# exact reciprocal divisions, four outputs a column apart sharing their loads
# ---------------------------------------------------------------------------

CL_CASES = [
    (2, (2, 9, 13, 32), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    (2, (1, 7, 11, 20), dict(kernel_size=3, stride=1, padding=1)),          # masked lanes
    (2, (1, 6, 10, 48), dict(kernel_size=2, stride=1, padding=1, count_include_pad=False)),
    (2, (2, 5, 9, 130), dict(kernel_size=(2, 3), stride=1, padding=(0, 1), ceil_mode=True)),
    (2, (1, 8, 8, 16), dict(kernel_size=3, stride=1, padding=0)),
    (2, (1, 6, 10, 20), dict(kernel_size=3, stride=1, padding=0)),         # last four masked
    (2, (1, 9, 12, 40), dict(kernel_size=4, stride=1, padding=2, count_include_pad=False)),
    (2, (1, 9, 12, 24), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    (2, (1, 6, 9, 24), dict(kernel_size=3, stride=1, padding=1, divisor_override=5)),
    (3, (1, 4, 6, 9, 36), dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    (3, (1, 3, 5, 7, 17), dict(kernel_size=(2, 2, 3), stride=1, padding=(1, 0, 1))),
]


def _cl_like_torch(rank, x_cl, kw, threads):
    # channels-last forward at `threads` threads, against torch's bits and
    # against the kernels without AVX-512
    before = cypool.get_num_threads()
    name = f"avg_pool{rank}d"
    to_cf = (0, rank + 1) + tuple(range(1, rank + 1))
    to_cl = (0,) + tuple(range(2, rank + 2)) + (1,)
    xt = torch.from_numpy(np.ascontiguousarray(x_cl.transpose(to_cf)))
    want = np.ascontiguousarray(getattr(F, name)(xt, **kw).numpy().transpose(to_cl))
    # the result written into the front of a larger buffer: nothing past it
    buf = np.full(want.size + 64, 7.0, dtype=np.float32)
    try:
        cypool.set_num_threads(threads)
        out = buf[:want.size].reshape(want.shape)
        got = getattr(cypool, name)(x_cl, channels_last=True, out=out, **kw)
        assert np.all(buf[want.size:] == 7.0)
        _kernels.limit_window_isa(1)
        plain = getattr(cypool, name)(x_cl, channels_last=True, **kw)
    finally:
        _kernels.limit_window_isa(2)
        cypool.set_num_threads(before)
    return got, plain, want


@pytest.mark.parametrize("rank,shape,kw", CL_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_channels_last_average_matches_torch(monkeypatch, rank, shape, kw, threads):
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    rng = np.random.default_rng(shape[-1] + threads)
    # a block of -0.0 across the first output's window columns, too
    x = _edgy(rng, shape)
    x[(0,) + (slice(1, 4),) * rank] = -0.0
    got, plain, want = _cl_like_torch(rank, x, kw, threads)
    assert got.tobytes() == want.tobytes() and plain.tobytes() == want.tobytes()
    assert (want == 0).any() and not np.signbit(want[want == 0]).all()
    # 2^-41 and 2^101 (outside the reciprocal division's range), subnormals,
    # NaN and inf: the true divisions where they are needed
    flat = x.reshape(-1)
    flat[7::17] = np.float32(2.0 ** -41)
    flat[9::19] = np.float32(-(2.0 ** 101))
    flat[1::23] = np.float32(1e-40)
    got, plain, want = _cl_like_torch(rank, x, kw, threads)
    assert got.tobytes() == want.tobytes() and plain.tobytes() == want.tobytes()
    flat[3::29] = np.nan
    flat[6::31] = np.inf
    got, plain, want = _cl_like_torch(rank, x, kw, threads)
    assert np.array_equal(got, want, equal_nan=True) and np.isnan(got).any()
    assert np.array_equal(plain, want, equal_nan=True)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=1, padding=1),
                                dict(kernel_size=3, stride=2, padding=1)])
def test_max_indices_of_windows_of_minus_infinity_only(kw, channels_last):
    # a window of -inf only: no tap is greater than the start, the value is
    # -inf and the index the window's first real tap (PyTorch's), also in
    # the upper lanes of each vector and where lanes of one vector differ
    # (channels-first: few planes, so that rows of outputs are the lanes)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 40, 7, 40) if channels_last else (1, 3, 7, 40))
    x = x.astype(np.float32)
    x[:, :, 1:5, 9:20] = -np.inf            # channels-first: output columns 10-18
    x[:, 9:20, 1:5, :] = -np.inf            # channels-last: lanes 9-19 of every pixel
    want_v, want_i = F.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
    if channels_last:
        v, i = cypool.max_pool2d(np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
                                 return_indices=True, channels_last=True, **kw)
        v, i = v.transpose(0, 3, 1, 2), i.transpose(0, 3, 1, 2)
    else:
        v, i = cypool.max_pool2d(x, return_indices=True, **kw)
    assert np.isneginf(want_v.numpy()).any()
    assert np.array_equal(v, want_v.numpy()) and np.array_equal(i, want_i.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lanes", [256, 300, 333])
def test_wide_channels_last_window_sums_agree_with_torch_at_every_isa_level(dtype, lanes):
    # pixels of 1 KiB and more: the first multiple of 256 bytes of lanes is
    # summed a tap at a time over all of them, the rest in register steps
    # (cp_window_add_v); both must give torch's bits, at every ISA level
    rng = np.random.default_rng(lanes)
    x = rng.standard_normal((2, 7, 9, lanes)).astype(dtype)
    x[0, 1, 2, ::5] = -0.0
    x[1, 3, 3, ::7] = 1e30
    nasty = _nasty(rng, x.shape, dtype)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    want = {k: np.ascontiguousarray(v.numpy().transpose(0, 2, 3, 1)) for k, v in (
        ("adaptive", F.adaptive_avg_pool2d(tx, (3, 4))),
        ("fixed", F.avg_pool2d(tx, 3, 2, 1, count_include_pad=False)))}
    # torch's global average is mean(), in an order of its own: the
    # row-major sum, divided by each extent in turn, in NumPy
    total = np.zeros((2, lanes), dtype)
    for h in range(7):
        for w in range(9):
            total = total + x[:, h, w]
    want["global"] = (total / dtype(7) / dtype(9)).reshape(2, 1, 1, lanes)
    results = []
    try:
        for level in (2, 1, 0):
            _kernels.limit_window_isa(level)
            got = {"adaptive": cypool.adaptive_avg_pool2d(x, (3, 4), channels_last=True),
                   "fixed": cypool.avg_pool2d(x, 3, 2, 1, count_include_pad=False,
                                              channels_last=True),
                   "global": cypool.global_avg_pool2d(x, channels_last=True)}
            for k, v in got.items():
                assert v.tobytes() == want[k].tobytes(), (level, k)
            results.append([cypool.adaptive_avg_pool2d(nasty, (3, 4), channels_last=True).tobytes(),
                            cypool.avg_pool2d(nasty, 3, 2, 1, channels_last=True).tobytes()])
    finally:
        _kernels.limit_window_isa(2)
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("lanes", [256, 300, 512])
def test_wide_channels_last_averages_by_one_divisor_match_torch(lanes):
    # float32 pixels of 1 KiB and more, one divisor a window (cp_window_avg_by512:
    # 256 lanes in registers; a power-of-two divisor multiplies by its
    # reciprocal, others take the exact reciprocal division): torch's bits
    # for tiny sums (below 2^-40, subnormal quotients), huge ones, -0.0,
    # NaN and infinities, divisors 1, 2, 3, 4, 6 and 9
    rng = np.random.default_rng(lanes)
    x = _nasty(rng, (2, 7, 9, lanes), np.float32)
    x[0, :3] *= np.float32(2.0 ** -126)                      # subnormal and tiny sums
    x[1, :2, :, ::3] = -0.0
    x[1, 4:, :, 1::4] = np.float32(3e38)                     # sums overflow to inf
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    try:
        for level in (2, 1, 0):         # runs of windows in one call at every level
            _kernels.limit_window_isa(level)
            for args in [(2, 2), (3, 2, 1), (3, 1, 1), ((1, 3), (1, 2), (0, 1)), (2, 3, 1)]:
                got = cypool.avg_pool2d(x, *args, count_include_pad=False, channels_last=True)
                want = F.avg_pool2d(tx, *args, count_include_pad=False).numpy()
                want = want.transpose(0, 2, 3, 1)
                assert got.shape == want.shape
                assert np.array_equal(got, want, equal_nan=True), (level, args)
                finite = np.isfinite(want)
                assert got[finite].tobytes() == want[finite].tobytes(), (level, args)
    finally:
        _kernels.limit_window_isa(2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 64, 7, 7), (3, 5, 4, 6), (2, 17, 1, 1), (40, 3, 5, 5)])
@pytest.mark.parametrize("kind", ["adaptive", "fixed", "override"])
def test_global_average_backward_of_planes_matches_torch(shape, dtype, kind):
    # channels-first planes pooled whole: every plane's gradient scaled as
    # one row of lanes, then each plane filled; aten's bits with -0, NaN,
    # inf, huge and subnormal gradients
    rng = np.random.default_rng(sum(shape))
    g = rng.standard_normal(shape[:2] + (1, 1)) * rng.choice([1, 1e-40, 1e-44, 1e30],
                                                              size=shape[:2] + (1, 1))
    g = g.astype(dtype)
    flat = g.reshape(-1)
    flat[::5] = -0.0
    flat[3::7] = np.nan
    flat[2::11] = np.inf
    tg, tx = torch.from_numpy(g), torch.zeros(shape, dtype=torch.from_numpy(g).dtype)
    if kind == "adaptive":
        want = torch.ops.aten._adaptive_avg_pool2d_backward(tg, tx)
        got = cypool.adaptive_avg_pool2d_backward(g, shape)
    else:
        over = 3 if kind == "override" else None
        want = torch.ops.aten.avg_pool2d_backward(tg, tx, list(shape[2:]), list(shape[2:]),
                                                  [0, 0], False, True, over)
        got = cypool.avg_pool2d_backward(g, shape, kernel_size=shape[2:],
                                         divisor_override=over)
    want = want.numpy()
    nan = np.isnan(want)
    assert np.array_equal(nan, np.isnan(got))
    assert got[~nan].tobytes() == want[~nan].tobytes()


COLUMN_LANE_CASES = [
    # channels-first shape, function, arguments: windows of 12 columns and
    # more that barely overlap, planes of 32 KiB and more (column lanes)
    ((2, 5, 96, 96), "adaptive_avg_pool2d", dict(output_size=7)),      # 13-14 columns
    ((1, 3, 113, 97), "adaptive_avg_pool2d", dict(output_size=(7, 5))),  # 20-21: half tiles
    ((3, 7, 64, 160), "adaptive_avg_pool2d", dict(output_size=(2, 10))),  # one plane a vector
    ((2, 3, 90, 100), "adaptive_avg_pool2d", dict(output_size=(3, 3))),   # 5 planes a vector
    ((1, 5, 96, 96), "adaptive_avg_pool2d", dict(output_size=(2, 1))),    # a whole row a lane
    ((1, 4, 96, 100), "adaptive_avg_pool2d", dict(output_size=(2, 4))),   # 25: 9 left, full tile
    ((2, 4, 96, 96), "avg_pool2d", dict(kernel_size=16)),
    ((1, 6, 100, 100), "avg_pool2d", dict(kernel_size=(3, 14), stride=(2, 14), padding=(1, 7),
                                          count_include_pad=False)),     # clipped windows
    ((1, 6, 100, 100), "avg_pool2d", dict(kernel_size=(3, 14), stride=(2, 14), padding=(1, 7))),
    ((2, 3, 96, 112), "avg_pool2d", dict(kernel_size=16, divisor_override=-7)),
    ((1, 2, 4, 96, 96), "adaptive_avg_pool3d", dict(output_size=(2, 3, 5))),
    ((1, 2, 4, 96, 96), "avg_pool3d", dict(kernel_size=(2, 3, 12), stride=(2, 3, 12))),
]


@pytest.mark.parametrize("shape,name,kw", COLUMN_LANE_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_column_lanes_forward_matches_torch(monkeypatch, shape, name, kw, dtype, threads):
    # channels-first sums with lanes of (plane, output column), whatever the
    # input's size (the size threshold set to 0): PyTorch's bits with -0,
    # NaN (two payloads: the running sum's wins), inf, huge and subnormal
    # taps, at ISA level 2 (the column lanes) and 1 (the row lanes); the
    # output an out= view with sentinels after it, the input untouched
    rng = np.random.default_rng(sum(shape) + threads)
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::5] = -0.0

    # windows hold from 40 to 4608 taps (input elements per output element):
    # the specials spread so that about a third of the sums meet one
    taps = flat.size // getattr(F, name)(torch.zeros(shape), **kw).numel()

    def spots(per_window):
        return rng.choice(flat.size, int(flat.size * per_window / taps), replace=False)

    flat[spots(1 / 8)] = np.nan
    flat[spots(1 / 10)] = np.inf
    flat[spots(1 / 10)] = -np.inf
    flat[spots(1 / 6)] = np.finfo(dtype).max / 4
    sub = rng.choice(flat.size, flat.size // 7, replace=False)
    flat[sub] = np.finfo(dtype).smallest_subnormal * rng.integers(-8, 9, sub.size)
    if dtype == np.float32:
        flat[spots(1 / 12)] = np.array([0x7FC00123], np.uint32).view(np.float32)[0]
        flat[spots(1 / 12)] = np.array([0xFFC00456], np.uint32).view(np.float32)[0]
    x[0, 1] = -0.0                      # a plane of -0 taps: +0 sums (begun at +0)
    before = x.copy()
    want = getattr(F, name)(torch.from_numpy(x), **kw).numpy()
    assert 0.3 < np.isfinite(want).mean() < 1       # (finite sums, and some that are not)
    assert not np.signbit(want[0, 1]).any() and (want[0, 1] == 0).all()
    n = want.size
    old = _kernels.col_lanes_threshold(0)
    try:
        for level in (2, 1):
            buf = np.full(n + 16, 7.0, dtype)
            with _run_at(monkeypatch, threads, level):
                got = getattr(cypool, name)(x, out=buf[:n].reshape(want.shape), **kw)
            assert np.shares_memory(got, buf)
            assert got.tobytes() == want.tobytes(), level
            assert (buf[n:] == 7).all()
    finally:
        _kernels.col_lanes_threshold(old)
    assert x.tobytes() == before.tobytes()


@pytest.mark.parametrize("C,dtype", [(64, np.float32), (48, np.float32), (16, np.float32),
                                     (32, np.float64), (64, np.float64)])
@pytest.mark.parametrize("threads", [1, 2])
def test_channels_last_window_rows_summed_in_registers_match_torch(monkeypatch, C, dtype,
                                                                   threads):
    # channels-last windows of more than 256 taps go a window row at a time
    # (cp_lanes_add); pixels of 256 bytes keep their sums in registers over a
    # row's taps, others add into the output tap by tap: PyTorch's bits with
    # NaNs of two payloads (the running sum's wins), -0, inf and huge taps,
    # overlapping windows (rows and columns shared by two outputs)
    x, flat, rng = _zeros_zoo((2, C, 41, 39), dtype, C + threads, 7)
    flat[rng.choice(flat.size, 40, replace=False)] = np.inf
    flat[rng.choice(flat.size, 40, replace=False)] = np.finfo(dtype).max / 3
    if dtype == np.float32:
        _nan_payloads(flat, rng, 30)
    else:
        flat[rng.choice(flat.size, 60, replace=False)] = np.nan
    x[0, 1] = -0.0
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    before = xl.copy()
    kw = dict(output_size=(2, 3))           # windows of 21 x 13-14 taps
    # (torch's contiguous results: cypool divides by rows, then columns, in
    # either layout, where torch's channels-last vectors divide once)
    want = F.adaptive_avg_pool2d(torch.from_numpy(x), **kw)
    want = np.ascontiguousarray(np.moveaxis(want.numpy(), 1, -1))
    assert 0.2 < np.isfinite(want).mean() < 1
    n = want.size
    buf = np.full(n + 16, 7.0, dtype)
    with _run_at(monkeypatch, threads, 2):
        got = cypool.adaptive_avg_pool2d(xl, out=buf[:n].reshape(want.shape),
                                         channels_last=True, **kw)
    assert np.shares_memory(got, buf)
    assert got.tobytes() == want.tobytes()
    assert (buf[n:] == 7).all()
    assert xl.tobytes() == before.tobytes()


@pytest.mark.parametrize("C", [128, 48, 40])
@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=1, padding=1, count_include_pad=False),
                                dict(kernel_size=2, stride=1),
                                dict(kernel_size=(2, 3), stride=1, padding=(0, 1))])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("offset", [0, 4])
def test_channels_last_four_window_averages_streamed_match_torch(monkeypatch, C, kw, threads,
                                                                 offset):
    # channels-last averages of 2 or 3 columns moved one column an output go
    # four outputs at a time (cp_window_avg_by4_f32); a large output is
    # written with non-temporal stores in its whole 32-lane steps where the
    # output is aligned to a line and C is a multiple of 16 (128: every
    # step; 48: one streamed step and a masked tail; 40: none), else as
    # plain stores (offset 4: an out= view off the line).  PyTorch's bits,
    # the floats around the output untouched, streamed or not.
    rng = np.random.default_rng(C + threads + offset)
    x = rng.standard_normal((2, C, 9, 23)).astype(np.float32)
    flat = x.reshape(-1)
    _specials(flat, rng, 13, 20)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    before = xl.copy()
    want = F.avg_pool2d(torch.from_numpy(x), **kw)
    want = np.ascontiguousarray(np.moveaxis(want.numpy(), 1, -1))
    _check_streamed_out(monkeypatch, threads, want, offset,
                        lambda out: cypool.avg_pool2d(xl, out=out, channels_last=True, **kw))
    assert xl.tobytes() == before.tobytes()


def _zeros_zoo(shape, dtype, seed, every):
    # standard normal values of dtype with -0 every `every` floats: the
    # array, its flat view and the generator (for the special values to add)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::every] = -0.0
    return x, flat, rng


def _nan_payloads(flat, rng, k):
    # k NaNs of each of two payloads, one of either sign, at random places
    # (which NaN a sum keeps depends on its operand order)
    wide = flat.dtype == np.float64
    for bits in ([0x7FF8000000000123, 0xFFF8000000000456] if wide else [0x7FC00123, 0xFFC00456]):
        flat[rng.choice(flat.size, k, replace=False)] = \
            np.array([bits], np.uint64 if wide else np.uint32).view(flat.dtype)[0]


def _specials(flat, rng, every, k):
    # -0 every `every` floats, then k infs, NaNs and huge values each
    flat[::every] = -0.0
    flat[rng.choice(flat.size, k, replace=False)] = np.inf
    flat[rng.choice(flat.size, k, replace=False)] = np.nan
    flat[rng.choice(flat.size, k, replace=False)] = np.finfo(np.float32).max / 2


def _check_streamed_out(monkeypatch, threads, want, offset, call):
    # call(out) into an out= view `offset` floats past a line, its result
    # stored in place and streamed (STREAM_BYTES 0): want's bits either way,
    # and the floats around the view untouched
    n = want.size
    raw = np.full(n + 64, 7.0, np.float32)
    lead = (-raw.ctypes.data % 64) // 4 + offset     # floats before the view
    for stream_bytes in (1 << 60, 0):
        raw[:] = 7.0
        out = raw[lead:lead + n].reshape(want.shape)
        with _run_at(monkeypatch, threads, 2, STREAM_BYTES=stream_bytes):
            got = call(out)
        assert np.shares_memory(got, raw)
        assert got.tobytes() == want.tobytes(), stream_bytes
        assert (raw[:lead] == 7).all() and (raw[lead + n:] == 7).all()


@pytest.mark.parametrize("C", [128, 48, 40])
@pytest.mark.parametrize("adaptive,kw", [
    (False, dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    (False, dict(kernel_size=2, stride=1)),
    (True, dict(output_size=(4, 9)))])                 # overlapping bins
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("offset", [0, 4])
def test_channels_last_row_gathers_streamed_match_torch(monkeypatch, C, adaptive, kw, threads,
                                                        offset):
    # the channels-last average backward that gathers each input row from a
    # ring of scaled output rows (cp_cl_gather_row_f32): a large gradient is
    # written with non-temporal stores where it is aligned to a line and C
    # is a multiple of 16 (128: 64-lane steps; 48: 16-lane ones; 40: none),
    # else as plain stores (offset 4: an out= view off the line).  PyTorch's
    # bits, the floats around the gradient untouched, streamed or not.
    rng = np.random.default_rng(C + threads + offset + adaptive)
    shape = (2, C, 7, 17)
    x = rng.standard_normal(shape).astype(np.float32)
    y = cypool.adaptive_avg_pool2d(x, **kw) if adaptive else cypool.avg_pool2d(x, **kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    flat = g.reshape(-1)
    _specials(flat, rng, 11, 12)
    want = np.ascontiguousarray(np.moveaxis(_torch_avg_grad(x, g, 2, adaptive, kw), 1, -1))
    g_cl = np.ascontiguousarray(np.moveaxis(g, 1, -1))
    before = g_cl.copy()

    def call(out):
        if adaptive:
            return cypool.adaptive_avg_pool2d_backward(g_cl, want.shape, channels_last=True,
                                                       out=out)
        return cypool.avg_pool2d_backward(g_cl, want.shape, channels_last=True, out=out, **kw)

    _check_streamed_out(monkeypatch, threads, want, offset, call)
    assert g_cl.tobytes() == before.tobytes()


# 2 x 2 x 2 windows 2 apart tiling a channels-first input (max_pool3d(2) of
# even sizes, adaptive halvings): the gradient written densely, 8 windows a
# vector into the 4 input rows of each output row (cp_fmax222_back_f32);
# rows of 16 floats and more on a line streamed whole lines.
PAIRS3_CASES = [
    ((2, 3, 4, 6, 32), "fixed", dict(kernel_size=2)),             # 16 outputs: two vectors
    ((1, 2, 6, 4, 34), "fixed", dict(kernel_size=2, stride=2)),   # 17: a vector and 1
    ((3, 2, 2, 2, 2), "fixed", dict(kernel_size=2)),              # 1 output a plane
    ((2, 2, 4, 8, 10), "adaptive", dict(output_size=(2, 4, 5))),
    ((1, 3, 2, 6, 64), "fixed", dict(kernel_size=2)),
    ((2, 2, 5, 4, 32), "fixed", dict(kernel_size=2)),             # odd D: the scatter
    ((2, 2, 4, 4, 4), "fixed", dict(kernel_size=2, padding=1)),   # padded: the scatter
]


@pytest.mark.parametrize("shape,kind,kw", PAIRS3_CASES)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream_bytes", [1 << 60, 0])
def test_channels_first_3d_pair_windows_backward_matches_torch(monkeypatch, shape, kind, kw,
                                                                threads, stream_bytes):
    t, ti, g = _pairs3_grads(shape, kind, kw, threads)
    want = t.grad.numpy()
    raw = np.full(want.size + 64, 7.0, np.float32)
    with _run_at(monkeypatch, threads, 2, STREAM_BYTES=stream_bytes):
        for offset in (0, 4):           # on a line, and off it
            got = _pairs3_back_into(raw, offset, kind, kw, g, ti.numpy(), shape)
            assert got.tobytes() == want.tobytes()
            i2 = _outside_windows(ti, shape)
            got = _pairs3_back_into(raw, offset, kind, kw, g, i2, shape)
            assert got.tobytes() == _scatter_sums(g, i2, shape).tobytes()


def _pairs3_grads(shape, kind, kw, seed):
    # torch's max_pool3d (kw) or adaptive max pool of the float32 zoo: the
    # input tensor (its gradient filled), its indices, the gradient given
    x = _fmax_zoo(shape, sum(shape) + seed)
    name = "adaptive_max_pool3d" if kind == "adaptive" else "max_pool3d"
    return _torch_max_grad(x, name, kw, seed)


def _pairs3_back_into(raw, offset, kind, kw, g, idx, in_shape, channels_last=False):
    # a 3-d max backward (max_pool3d with kw, or adaptive) into an out= view
    # of raw `offset` floats past a line: its result, raw around it untouched
    isz = int(np.prod(in_shape))
    lead = (-raw.ctypes.data % 64) // 4 + offset
    raw[:] = 7.0
    out = raw[lead:lead + isz].reshape(in_shape)
    if kind == "adaptive":
        got = cypool.adaptive_max_pool3d_backward(g, idx, in_shape, out=out,
                                                  channels_last=channels_last)
    else:
        bk = {k: v for k, v in kw.items() if k != "output_size"}
        got = cypool.max_pool3d_backward(g, idx, in_shape, out=out,
                                         channels_last=channels_last, **bk)
    assert np.shares_memory(got, raw)
    assert (raw[:lead] == 7).all() and (raw[lead + isz:] == 7).all()
    return got


def _outside_windows(ti, shape):
    # torch's indices ti with some outside their windows (any position in
    # the plane, as PyTorch's scatter takes them) and a -1 (no input)
    i2 = ti.numpy().copy()
    i2.reshape(-1)[-1] = 0
    i2.reshape(-1)[0] = -1
    i2.reshape(-1)[len(i2.reshape(-1)) // 2] = int(np.prod(shape[2:])) - 1
    return i2


@pytest.mark.parametrize("shape,kind,kw", [
    ((2, 32, 4, 6, 8), "fixed", dict(kernel_size=2)),
    ((1, 40, 2, 4, 6), "fixed", dict(kernel_size=2, stride=2)),     # 40: an 8-lane tail
    ((3, 16, 2, 2, 2), "fixed", dict(kernel_size=2)),               # 1 output a sample
    ((2, 7, 4, 8, 10), "adaptive", dict(output_size=(2, 4, 5))),    # 7: a tail only
    ((2, 16, 5, 4, 6), "fixed", dict(kernel_size=2)),               # odd D: not this kernel
])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("stream_bytes", [1 << 60, 0])
def test_channels_last_3d_pair_windows_backward_matches_torch(monkeypatch, shape, kind, kw,
                                                              threads, stream_bytes):
    # channels-last 2 x 2 x 2 windows tiling the input: each window writes
    # its 8 pixels (cp_cl_fmax222_back_f32), streamed or not, into out=
    # views on a line and off it; torch's bits (NaN and -0 gradients); then
    # indices outside their windows, and -1: the scatter's sums
    t, ti, g = _pairs3_grads(shape, kind, kw, threads)
    cl = lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1))
    want = cl(t.grad.numpy())
    raw = np.full(want.size + 64, 7.0, np.float32)
    picked = []
    kernel = _cpu._kernel
    monkeypatch.setattr(_cpu, "_kernel", lambda name, dt: picked.append(name) or kernel(name, dt))
    with _run_at(monkeypatch, threads, 2, DENSE_STREAM_BYTES=stream_bytes):
        for offset in (0, 4):
            picked.clear()
            got = _pairs3_back_into(raw, offset, kind, kw, cl(g), cl(ti.numpy()), want.shape,
                                    True)
            assert got.tobytes() == want.tobytes()
            assert not picked                 # (no scatter, no bands)
            i2 = _outside_windows(ti, shape)
            got = _pairs3_back_into(raw, offset, kind, kw, cl(g), cl(i2), want.shape, True)
            assert got.tobytes() == cl(_scatter_sums(g, i2, shape)).tobytes()
            # an index 2^32 past its own (the same low 32 bits): refused by
            # the kernel (no out=: no check of the indices beforehand)
            i3 = ti.numpy().copy()
            i3.reshape(-1)[5] += 1 << 32
            with pytest.raises(ValueError, match=r"indices must lie in"):
                if kind == "adaptive":
                    cypool.adaptive_max_pool3d_backward(cl(g), cl(i3), want.shape,
                                                        channels_last=True)
                else:
                    cypool.max_pool3d_backward(cl(g), cl(i3), want.shape, channels_last=True,
                                               **kw)


def test_vendor_choices_follow_the_cpu():
    # amd_cores() picks the choices measured on AMD's cores (the column
    # lanes, the dense max backward's streaming threshold): never on Intel's
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if "GenuineIntel" in info:
        assert not _kernels.amd_cores()
    if _kernels.amd_cores():
        assert "AuthenticAMD" in info
    assert _cpu.DENSE_STREAM_BYTES == (16 << 20 if _kernels.amd_cores() else _cpu.STREAM_BYTES)


@pytest.mark.parametrize("C", [16, 48, 64])
@pytest.mark.parametrize("kw", [dict(kernel_size=2),
                                dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1),
                                     dilation=(1, 2), ceil_mode=True)])
@pytest.mark.parametrize("threads", [1, 2])
def test_channels_last_max_runs_of_shifted_windows_match_torch(monkeypatch, C, kw, threads):
    # channels-last float32 max, C a multiple of 16: the outputs of a row
    # whose windows are the same taps shifted go through one call
    # (cp_clmax_run_f32), four (output, 16 channels) units side by side,
    # across outputs when C < 64 (48: a unit of one output beside two of the
    # next); the edge windows clipped by the padding one at a time.
    # PyTorch's values (of two NaN payloads, a window's last NaN), indices
    # (ties: the first tap; windows of -inf only: the first tap), values
    # only, and outputs streamed
    rng = np.random.default_rng(C + threads)
    x = np.round(rng.standard_normal((2, C, 9, 23)), 1).astype(np.float32)   # ties
    flat = x.reshape(-1)
    flat[::13] = np.array([0x7FC00123], np.uint32).view(np.float32)[0]
    flat[5::17] = np.array([0xFFC00456], np.uint32).view(np.float32)[0]
    x[:, 3:9, 2:6, 4:15] = -np.inf
    want, want_i = F.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
    want, want_i = want.numpy(), want_i.numpy()
    assert np.isnan(want).any() and np.isneginf(want).any()
    xcl = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    before_x = xcl.copy()
    before = cypool.get_num_threads()
    monkeypatch.setattr(_cpu, "SERIAL_WORK", 0)
    try:
        cypool.set_num_threads(threads)
        got = [cypool.max_pool2d(xcl, return_indices=True, channels_last=True, **kw)]
        only = cypool.max_pool2d(xcl, channels_last=True, **kw)
        monkeypatch.setattr(_cpu, "STREAM_BYTES", 0)    # every output "large": streamed
        got.append(cypool.max_pool2d(xcl, return_indices=True, channels_last=True, **kw))
    finally:
        cypool.set_num_threads(before)
    for v, i in got:
        assert v.transpose(0, 3, 1, 2).tobytes() == want.tobytes()
        assert np.array_equal(i.transpose(0, 3, 1, 2), want_i)
    assert only.transpose(0, 3, 1, 2).tobytes() == want.tobytes()
    assert xcl.tobytes() == before_x.tobytes()
