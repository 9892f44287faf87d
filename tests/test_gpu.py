"""The GPU path (CuPy) against the NumPy path: the same bits, on the device.

Every public function family is run on CuPy arrays and on the same data as
NumPy arrays, and the results compared:

* values bit-identical (NaN payloads aside), except the global / whole-plane
  average, whose sum may be taken in another order on the GPU (a reduction
  across threads): there the dtype's tolerance of ``conftest.TOL`` applies;
* max-pooling indices identical;
* gradients bit-identical to the NumPy path and across two GPU runs (the
  GPU backward has no atomics, unlike PyTorch's CUDA backward).

Also: results are CuPy arrays on the input's device, ``out=`` takes CuPy
arrays, host and device arrays mixed in one call raise TypeError, and CUDA
torch tensors are taken zero-copy and agree with PyTorch's own CUDA pooling.

The module needs CuPy and a CUDA device; without either it is skipped as a
whole, at collection (CuPy is imported by ``importorskip`` and nothing else
here touches the GPU at import time).
"""
from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

import cypool
from cypool import _gpu

cupy = pytest.importorskip("cupy", reason="the GPU path needs CuPy (not installed)")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(_gpu.device_count() == 0,
                       reason="the GPU path needs a CUDA device (CuPy finds none)"),
]

SEED = 20260311


# ---------------------------------------------------------------------------
# Helpers (kept here: test modules cannot import each other)
# ---------------------------------------------------------------------------

def _native(x: np.ndarray) -> np.ndarray:
    # CuPy has no non-native byte orders; the values are what is compared
    return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))


_byte_bounds = getattr(getattr(np.lib, "array_utils", None), "byte_bounds", None) or \
    getattr(np, "byte_bounds", None)


def to_device(x) -> cupy.ndarray:
    """``x`` on the current device *with its strides*: a view of a device copy
    of the memory ``x`` spans, so that a strided, reversed or Fortran-order
    host array is a strided, reversed or Fortran-order device array (a plain
    ``cupy.asarray`` would hand the GPU path a contiguous copy)."""
    x = _native(np.asarray(x))
    if x.size == 0 or x.flags.c_contiguous:
        return cupy.asarray(x)
    lo, hi = _byte_bounds(x)
    span = np.ctypeslib.as_array((ctypes.c_uint8 * (hi - lo)).from_address(lo))
    buf = cupy.asarray(span.copy())
    first = x.__array_interface__["data"][0] - lo      # byte offset of x[0, ..., 0]
    return cupy.ndarray(x.shape, x.dtype, buf.data + first, x.strides)


def on_device(a, device: int = 0) -> np.ndarray:
    """A result, checked to be a CuPy array on ``device``, back on the host."""
    assert isinstance(a, cupy.ndarray), f"expected a cupy.ndarray, got {type(a).__name__}"
    assert a.device.id == device, f"result on device {a.device.id}, input on {device}"
    return cupy.asnumpy(a)


def check(got, want, tools, *, close: bool = False, scale: float = 1.0, device: int = 0):
    """GPU result(s) ``got`` against NumPy result(s) ``want``: bit-identical,
    or (``close``) within the dtype's tolerance; tuples compared item by item."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), type(got)
        for g, w in zip(got, want):
            check(g, w, tools, close=close, scale=scale, device=device)
        return
    g, want = on_device(got, device), _native(np.asarray(want))
    if close and want.dtype.kind == "f":
        assert g.dtype == want.dtype, (g.dtype, want.dtype)
        tools.assert_close(g, want, scale=scale)
    else:
        tools.assert_identical(g, want)


def check_backward(run_gpu, want, tools):
    """A GPU gradient: bit-identical to the NumPy path's and to a second GPU run."""
    first = run_gpu()
    check(first, want, tools)
    second = run_gpu()
    assert on_device(second).tobytes() == on_device(first).tobytes(), \
        "two GPU runs of the same backward call differ"


def scale_of(x) -> float:
    """Magnitude of the finite inputs: scales the absolute tolerance of a mean."""
    x = np.asarray(x, dtype=np.float64)
    finite = np.abs(x[np.isfinite(x)])
    return max(1.0, float(finite.max(initial=0.0)))


def unchanged(xd, before: bytes):
    assert cupy.asnumpy(xd).tobytes() == before, "the input was modified"


def grad_like(rng, y, dtype=None):
    """A gradient for output ``y`` (never NaN: the comparisons stay bitwise)."""
    dt = np.dtype(dtype or (y.dtype if y.dtype.kind == "f" else np.float32))
    return rng.standard_normal(y.shape).astype(dt)


def values(rng, shape, kind, dtype, tools):
    """Test data: ``"normal"``, or odd values of the dtype (floats: ties, NaN,
    +-inf, signed zeros; integers: ties and the type's extremes; bool)."""
    dt = np.dtype(dtype)
    if kind == "normal":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind == "b":
        return rng.random(shape) < 0.3
    if dt.kind in "iu":
        info = np.iinfo(dt)
        x = np.clip(rng.integers(-3, 4, shape), max(info.min, -3), None).astype(dt)
        x[rng.random(shape) < 0.1] = info.max          # the extremes (and ties of them)
        x[rng.random(shape) < 0.1] = info.min
        return x
    return tools.special_floats(rng, shape, dt)     # ties, NaN, +-inf, -0.0


def _layout(x, rank, cl, tools, contiguous=True):
    """A channels-first host array in cypool's layout (conftest's to_layout)."""
    return tools.to_layout(x, rank, cl, contiguous)


# ---------------------------------------------------------------------------
# The helpers themselves: a device copy keeps the host array's strides
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("view", ["step", "reversed", "fortran", "moveaxis"])
def test_to_device_keeps_strides(view):
    x = np.arange(2 * 3 * 8 * 10, dtype=np.float32).reshape(2, 3, 8, 10)
    v = {"step": x[:, 1:, ::2, 1::3], "reversed": x[::-1, :, ::-1],
         "fortran": np.asfortranarray(x), "moveaxis": np.moveaxis(x, 1, -1)}[view]
    d = to_device(v)
    assert d.strides == v.strides and not d.flags.c_contiguous
    assert np.array_equal(cupy.asnumpy(d), v)


# ---------------------------------------------------------------------------
# Adaptive and global pooling over the zoo (conftest): 1d/2d/3d, odd values,
# odd memory layouts, unbatched, empty batch, float16, integers and bool
# ---------------------------------------------------------------------------

def _adaptive_all(c, cl, tools, rng):
    """Every adaptive/global function, forward and backward, on one zoo case."""
    rank = c.rank
    x = _layout(c.x, rank, cl, tools, c.contiguous)
    xd = to_device(x)
    before = cupy.asnumpy(xd).tobytes()
    osize = c.output_size
    whole = all(o == 1 for o in c.out_spatial())
    s = scale_of(x)
    kw = {"channels_last": cl}

    f = tools.fn("adaptive_avg", rank)
    want = f(x, osize, **kw)
    check(f(xd, osize, **kw), want, tools, close=whole, scale=s)
    g = grad_like(rng, want)
    b = tools.fn("adaptive_avg_backward", rank)
    check_backward(lambda: b(cupy.asarray(g), x.shape, **kw), b(g, x.shape, **kw), tools)
    f = tools.fn("global_avg", rank)
    for keep in (True, False):
        check(f(xd, keepdims=keep, **kw), f(x, keepdims=keep, **kw), tools, close=True,
              scale=s)

    f = tools.fn("adaptive_max", rank)
    check(f(xd, osize, **kw), f(x, osize, **kw), tools)
    want = f(x, osize, True, **kw)
    got = f(xd, osize, True, **kw)
    check(got, want, tools)
    g = grad_like(rng, want[0])
    b = tools.fn("adaptive_max_backward", rank)
    check_backward(lambda: b(cupy.asarray(g), got[1], x.shape, **kw),
                   b(g, want[1], x.shape, **kw), tools)
    f = tools.fn("global_max", rank)
    for keep in (True, False):
        check(f(xd, keepdims=keep, return_indices=True, **kw),
              f(x, keepdims=keep, return_indices=True, **kw), tools)
    unchanged(xd, before)


@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
def test_adaptive_and_global_zoo(case, cl, tools, rng):
    _adaptive_all(case, cl, tools, rng)


@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
def test_adaptive_and_global_float16(half_case, cl, tools, rng):
    _adaptive_all(half_case, cl, tools, rng)


@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
def test_adaptive_and_global_integers(int_case, cl, tools, rng):
    """Max pooling runs natively on integers and bool; averages give float64."""
    _adaptive_all(int_case, cl, tools, rng)


# ---------------------------------------------------------------------------
# Fixed-window pooling: padding, stride, dilation, ceil_mode,
# count_include_pad, divisor_override, 1d/2d/3d
# ---------------------------------------------------------------------------

SPATIAL = {1: (13,), 2: (9, 11), 3: (5, 6, 7)}


def _per_dim(rank, *vals):
    return tuple(vals[:rank])


def _fixed_params():
    """(id, rank, spatial, op, kwargs) of every fixed-window case."""
    out = []
    for rank in (1, 2, 3):
        sp = SPATIAL[rank]
        k3s2p1 = {"kernel_size": 3, "stride": 2, "padding": 1}
        k3s1p1 = {"kernel_size": 3, "stride": 1, "padding": 1}
        k5s3p2 = {"kernel_size": 5, "stride": 3, "padding": 2}
        both = [
            ("k2", sp, {"kernel_size": 2}),
            ("k3s2p1", sp, k3s2p1),
            ("k3s1p1", sp, k3s1p1),
            ("k3s2p1-ceil", sp, {**k3s2p1, "ceil_mode": True}),
            ("k2s3-ceil", sp, {"kernel_size": 2, "stride": 3, "ceil_mode": True}),
            ("k5s3p2-ceil", sp, {**k5s3p2, "ceil_mode": True}),
            ("k3s2-d2", sp, {"kernel_size": 3, "stride": 2, "dilation": 2}),
            ("k3s1p1-d2-ceil", sp, {**k3s1p1, "dilation": 2, "ceil_mode": True}),
            ("same-k3s2", sp, {"kernel_size": 3, "stride": 2, "padding": "same"}),
            ("valid-k4s3", sp, {"kernel_size": 4, "stride": 3, "padding": "valid"}),
            ("k1", sp, {"kernel_size": 1}),
            ("pairs", sp, {"kernel_size": 3, "stride": 2,
                           "padding": _per_dim(rank, (0, 1), (1, 1), (2, 0))}),
            # dilated windows reaching over the input into the padding: windows
            # wholly in the padding (index -1, no input to average)
            ("empty-windows", (2,) * rank, {"kernel_size": 2, "stride": 1, "dilation": 4,
                                            "padding": ((3, 3),) * rank}),
        ]
        if rank > 1:
            both.append(("per-dim", sp, {"kernel_size": _per_dim(rank, 3, 2, 3),
                                         "stride": _per_dim(rank, 2, 1, 2),
                                         "padding": _per_dim(rank, 1, 0, 1)}))
        for name, s, kw in both:
            for op in ("avg", "max"):
                out.append((f"{rank}d-{op}-{name}", rank, s, op, kw))
        nocip = {"count_include_pad": False}
        avg_only = [
            ("k3s1p1-nocip", {**k3s1p1, **nocip}),
            ("k3s2p1-ceil-nocip", {**k3s2p1, "ceil_mode": True, **nocip}),
            ("k5s3p2-ceil-nocip", {**k5s3p2, "ceil_mode": True, **nocip}),
            ("div4", {**k3s2p1, "divisor_override": 4}),
            ("div-3", {**k3s1p1, "divisor_override": -3}),
            ("d2-pairs-nocip", {"kernel_size": 3, "stride": 1, "padding": ((2, 2),) * rank,
                                "dilation": 2, **nocip}),
        ]
        for name, kw in avg_only:
            out.append((f"{rank}d-avg-{name}", rank, sp, "avg", kw))
    return out


FIXED = _fixed_params()


def _fixed_call(op, rank, x, kw, cl, return_indices=False):
    f = getattr(cypool, f"{op}_pool{rank}d")
    if op == "max":
        return f(x, return_indices=return_indices, channels_last=cl, **kw)
    return f(x, channels_last=cl, **kw)


def _fixed_backward(op, rank, g, idx, shape, kw, cl):
    b = getattr(cypool, f"{op}_pool{rank}d_backward")
    k = dict(kw)
    ks, st, pad = k.pop("kernel_size"), k.pop("stride", None), k.pop("padding", 0)
    if op == "max":
        return b(g, idx, shape, ks, st, pad, k.pop("dilation", 1), k.pop("ceil_mode", False),
                 channels_last=cl)
    return b(g, shape, ks, st, pad, k.pop("ceil_mode", False), k.pop("count_include_pad", True),
             k.pop("divisor_override", None), dilation=k.pop("dilation", 1), channels_last=cl)


def _fixed_all(op, rank, x, kw, cl, tools, rng, grad_dtype=None):
    """Forward (values, indices) and backward of one fixed-window case,
    ``x`` already in cypool's layout (any strides)."""
    xd = to_device(x)
    before = cupy.asnumpy(xd).tobytes()
    if op == "max":
        check(_fixed_call(op, rank, xd, kw, cl), _fixed_call(op, rank, x, kw, cl), tools)
        want = _fixed_call(op, rank, x, kw, cl, True)
        got = _fixed_call(op, rank, xd, kw, cl, True)
        check(got, want, tools)
        y, idx, idx_d = want[0], want[1], got[1]
    else:
        y = _fixed_call(op, rank, x, kw, cl)
        check(_fixed_call(op, rank, xd, kw, cl), y, tools)
        idx = idx_d = None
    g = grad_like(rng, y, grad_dtype)
    want_g = _fixed_backward(op, rank, g, idx, x.shape, kw, cl)
    check_backward(lambda: _fixed_backward(op, rank, cupy.asarray(g), idx_d, x.shape, kw, cl),
                   want_g, tools)
    unchanged(xd, before)


@pytest.mark.parametrize("kind", ["normal", "special"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("name, rank, spatial, op, kw", FIXED, ids=[p[0] for p in FIXED])
def test_fixed(name, rank, spatial, op, kw, cl, dtype, kind, tools, rng):
    x = values(rng, (2, 3) + spatial, kind, dtype, tools)
    _fixed_all(op, rank, _layout(x, rank, cl, tools), kw, cl, tools, rng)


INT_DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"]


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_fixed_max_integers(rank, cl, dtype, tools, rng):
    """Padded positions never win, also against each integer type's minimum."""
    x = _layout(values(rng, (2, 3) + SPATIAL[rank], "int", dtype, tools), rank, cl, tools)
    for kw in ({"kernel_size": 3, "stride": 2, "padding": 1},
               {"kernel_size": 2, "stride": 1, "dilation": 2, "ceil_mode": True}):
        _fixed_all("max", rank, x, kw, cl, tools, rng, grad_dtype=np.float32)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_fixed_avg_integers_give_float64(rank, tools, rng):
    x = values(rng, (2, 3) + SPATIAL[rank], "int", "uint8", tools)
    kw = {"kernel_size": 3, "stride": 2, "padding": 1}
    got = _fixed_call("avg", rank, to_device(x), kw, False)
    assert got.dtype == np.float64
    check(got, _fixed_call("avg", rank, x, kw, False), tools)


def _step(a):
    """``a`` as every other element of a wider array (a strided view)."""
    b = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    b[..., ::2] = a
    return b[..., ::2]


def _reversed(a):
    """``a`` as a view with negative strides on its first and last axes."""
    flip = (slice(None, None, -1),) + (slice(None),) * (a.ndim - 2) + (slice(None, None, -1),)
    return np.ascontiguousarray(a[flip])[flip]


# the same values in other memory layouts (the shape kept)
STRIDED = {"step": _step, "reversed": _reversed, "fortran": np.asfortranarray}


@pytest.mark.parametrize("view", sorted(STRIDED))
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("op", ["avg", "max"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_fixed_strided_inputs_and_gradients(rank, op, cl, view, tools, rng):
    """Non-contiguous inputs, gradients and indices give the results that
    contiguous ones do (channels-last inputs are strided moveaxis views too)."""
    strided = STRIDED[view]
    x = strided(values(rng, (2, 3) + SPATIAL[rank], "special", "float32", tools))
    x = _layout(x, rank, cl, tools, contiguous=False)
    xd = to_device(x)
    assert not xd.flags.c_contiguous
    kw = {"kernel_size": 3, "stride": 2, "padding": 1}
    if op == "max":
        want = _fixed_call(op, rank, x, kw, cl, True)
        got = _fixed_call(op, rank, xd, kw, cl, True)
        check(got, want, tools)
        y, idx = want
        idx = strided(idx)
        idx_d = to_device(idx)
        assert not idx_d.flags.c_contiguous
    else:
        y = _fixed_call(op, rank, x, kw, cl)
        check(_fixed_call(op, rank, xd, kw, cl), y, tools)
        idx = idx_d = None
    g = strided(grad_like(rng, y))
    gd = to_device(g)
    assert not gd.flags.c_contiguous
    check_backward(lambda: _fixed_backward(op, rank, gd, idx_d, x.shape, kw, cl),
                   _fixed_backward(op, rank, g, idx, x.shape, kw, cl), tools)


@pytest.mark.parametrize("op", ["avg", "max"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_fixed_unbatched_and_empty_batch(rank, op, tools, rng):
    kw = {"kernel_size": 3, "stride": 2, "padding": 1}
    for shape in ((3,) + SPATIAL[rank], (0, 3) + SPATIAL[rank], (2, 0) + SPATIAL[rank]):
        for cl in (False, True):
            x = _layout(values(rng, shape, "special", "float32", tools), rank, cl, tools)
            _fixed_all(op, rank, x, kw, cl, tools, rng)


# ---------------------------------------------------------------------------
# Max backward beyond the forward's own indices
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_max_backward_foreign_indices(rank, dtype, cl, tools, rng):
    """Indices outside their own window (another call's, or made up; -1 for
    "no input"): the scatter path, still the NumPy path's sums in output
    order, run after run."""
    shape = _layout(np.empty((2, 3) + SPATIAL[rank]), rank, cl, tools).shape
    plane = math.prod(SPATIAL[rank])
    kw = {"kernel_size": 3, "stride": 2, "padding": 1}
    y = _fixed_call("max", rank, np.zeros(shape, dtype), kw, cl)
    idx = rng.integers(-1, plane, y.shape)
    idx.reshape(-1)[::5] = 0                    # many gradients onto one element
    g = grad_like(rng, y)
    check_backward(lambda: _fixed_backward("max", rank, cupy.asarray(g), cupy.asarray(idx),
                                           shape, kw, cl),
                   _fixed_backward("max", rank, g, idx, shape, kw, cl), tools)
    b = tools.fn("adaptive_max_backward", rank)
    osize = tuple(max(1, s // 2) for s in SPATIAL[rank])
    ya = tools.fn("adaptive_max", rank)(np.zeros(shape, dtype), osize, channels_last=cl)
    idx = rng.integers(-1, plane, ya.shape)
    g = grad_like(rng, ya)
    check_backward(lambda: b(cupy.asarray(g), cupy.asarray(idx), shape, channels_last=cl),
                   b(g, idx, shape, channels_last=cl), tools)


@pytest.mark.parametrize("bad", [-2, "plane"])
def test_max_backward_bad_indices_raise(bad, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y, idx = cypool.max_pool2d(to_device(x), 2, return_indices=True)
    idx = idx.copy()
    idx[1, 2, 0, 1] = 36 if bad == "plane" else bad
    g = cupy.ones(y.shape, cupy.float32)
    out = cupy.full(x.shape, 7.0, cupy.float32)
    with pytest.raises(ValueError, match="indices"):
        cypool.max_pool2d_backward(g, idx, x.shape, 2)
    with pytest.raises(ValueError, match="indices"):
        cypool.max_pool2d_backward(g, idx, x.shape, 2, out=out)
    assert bool((out == 7.0).all()), "a refused call wrote into out"
    with pytest.raises(ValueError, match="indices"):
        cypool.adaptive_max_pool2d_backward(g, idx, x.shape)


# ---------------------------------------------------------------------------
# Results, devices, streams, out=, mixing host and device arrays
# ---------------------------------------------------------------------------

def test_results_are_cupy_arrays_on_the_current_device(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with cupy.cuda.Device(0):
        xd = cupy.asarray(x)
        for r in (cypool.adaptive_avg_pool2d(xd, 3), cypool.avg_pool2d(xd, 2),
                  *cypool.max_pool2d(xd, 2, return_indices=True),
                  cypool.global_avg_pool2d(xd), cypool.avg_pool2d_backward(
                      cupy.ones((2, 3, 4, 4), cupy.float32), xd.shape, 2)):
            assert isinstance(r, cupy.ndarray) and r.device.id == 0
    assert cypool.backend(xd) == "cupy"


@pytest.mark.skipif(_gpu.device_count() < 2, reason="needs two CUDA devices")
def test_results_stay_on_the_inputs_device(tools, rng):
    """An input on device 1 pools on device 1 while device 0 is current."""
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    with cupy.cuda.Device(1):
        xd = cupy.asarray(x)
        g = cupy.asarray(rng.standard_normal((2, 3, 4, 3)).astype(np.float32))
    with cupy.cuda.Device(0):
        check(cypool.adaptive_avg_pool2d(xd, (4, 3)), cypool.adaptive_avg_pool2d(x, (4, 3)),
              tools, device=1)
        v, i = cypool.max_pool2d(x, 2, return_indices=True)
        vd, idd = cypool.max_pool2d(xd, 2, return_indices=True)
        check((vd, idd), (v, i), tools, device=1)
        check(cypool.max_pool2d_backward(g, idd, x.shape, 2),
              cypool.max_pool2d_backward(cupy.asnumpy(g), i, x.shape, 2), tools, device=1)
        check(cypool.adaptive_avg_pool2d_backward(g, x.shape),
              cypool.adaptive_avg_pool2d_backward(cupy.asnumpy(g), x.shape), tools, device=1)


def test_non_default_stream(tools, rng):
    """Work queued on the current (non-default) stream sees its inputs and
    gives its results there: the data is made, pooled and read on one stream."""
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    with cupy.cuda.Stream(non_blocking=True) as s:
        xd = cupy.asarray(x) * 2
        y = cypool.avg_pool2d(xd, 3, 2, 1)
        v, i = cypool.adaptive_max_pool2d(xd, 5, True)
        gi = cypool.adaptive_max_pool2d_backward(v, i, xd.shape)
        s.synchronize()
    x2 = x * 2
    check(y, cypool.avg_pool2d(x2, 3, 2, 1), tools)
    wv, wi = cypool.adaptive_max_pool2d(x2, 5, True)
    check((v, i), (wv, wi), tools)
    check(gi, cypool.adaptive_max_pool2d_backward(wv, wi, x2.shape), tools)


@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
def test_out_takes_cupy_arrays(cl, tools, rng):
    x = _layout(rng.standard_normal((2, 3, 9, 8)).astype(np.float32), 2, cl, tools)
    xd = cupy.asarray(x)
    kw = {"channels_last": cl}

    want = cypool.adaptive_avg_pool2d(x, (4, 3), **kw)
    out = cupy.full(want.shape, np.nan, cupy.float32)
    assert cypool.adaptive_avg_pool2d(xd, (4, 3), out=out, **kw) is out
    check(out, want, tools)

    want = cypool.max_pool2d(x, 3, 2, 1, return_indices=True, **kw)
    pair = (cupy.empty(want[0].shape, cupy.float32), cupy.empty(want[1].shape, cupy.int64))
    got = cypool.max_pool2d(xd, 3, 2, 1, return_indices=True, out=pair, **kw)
    assert got[0] is pair[0] and got[1] is pair[1]
    check(pair, want, tools)

    want = cypool.global_avg_pool2d(x, keepdims=False, **kw)       # out of another shape
    out = cupy.empty(want.shape, cupy.float32)
    assert cypool.global_avg_pool2d(xd, keepdims=False, out=out, **kw) is out
    check(out, want, tools, close=True)
    wv, wi = cypool.global_max_pool2d(x, keepdims=False, return_indices=True, **kw)
    pair = (cupy.empty(wv.shape, cupy.float32), cupy.empty(wi.shape, cupy.int64))
    got = cypool.global_max_pool2d(xd, keepdims=False, return_indices=True, out=pair, **kw)
    assert got[0] is pair[0] and got[1] is pair[1]
    check(pair, (wv, wi), tools)

    v, i = cypool.max_pool2d(x, 3, 2, 1, return_indices=True, **kw)
    g = grad_like(rng, v)
    want = cypool.max_pool2d_backward(g, i, x.shape, 3, 2, 1, **kw)
    out = cupy.full(x.shape, np.nan, cupy.float32)
    assert cypool.max_pool2d_backward(cupy.asarray(g), cupy.asarray(i), x.shape, 3, 2, 1,
                                      out=out, **kw) is out
    check(out, want, tools)
    want = cypool.avg_pool2d_backward(g, x.shape, 3, 2, 1, **kw)
    out = cupy.full(x.shape, np.nan, cupy.float32)
    assert cypool.avg_pool2d_backward(cupy.asarray(g), x.shape, 3, 2, 1, out=out, **kw) is out
    check(out, want, tools)

    with pytest.raises(ValueError, match="out"):
        cypool.adaptive_avg_pool2d(xd, (4, 3), out=cupy.empty((1, 2, 3), cupy.float32), **kw)
    y = cypool.avg_pool2d(x, 2, **kw)
    with pytest.raises(ValueError, match="out"):
        cypool.avg_pool2d(xd, 2, out=cupy.empty(y.shape, cupy.float64), **kw)


def test_mixing_host_and_device_arrays_raises(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    v, i = cypool.max_pool2d(x, 2, return_indices=True)
    g = np.ones_like(v)
    gd, idd = cupy.asarray(g), cupy.asarray(i)
    with pytest.raises(TypeError):
        cypool.max_pool2d_backward(gd, i, x.shape, 2)
    with pytest.raises(TypeError):
        cypool.max_pool2d_backward(g, idd, x.shape, 2)
    with pytest.raises(TypeError):
        cypool.adaptive_max_pool2d_backward(gd, i, x.shape)
    with pytest.raises(TypeError):
        cypool.adaptive_max_pool2d_backward(g, idd, x.shape)
    # out= is an array of the call too: a host out for a device input (and
    # the other way round) is refused, not half written
    host_out = np.full(v.shape, 7.0, np.float32)
    with pytest.raises(TypeError):
        cypool.max_pool2d(cupy.asarray(x), 2, out=host_out)
    assert (host_out == 7.0).all()
    dev_out = cupy.full(v.shape, 7.0, cupy.float32)
    with pytest.raises(TypeError):
        cypool.max_pool2d(x, 2, out=dev_out)
    assert bool((dev_out == 7.0).all())


def test_bad_arguments_raise_before_any_work(rng):
    """The same validation as the NumPy path: errors, not launches."""
    xd = cupy.asarray(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    with pytest.raises(ValueError):
        cypool.max_pool2d(xd, 5)                         # output would be empty
    with pytest.raises(ValueError):
        cypool.avg_pool2d(xd, 2, padding=2)              # over half the kernel
    with pytest.raises(TypeError):
        cypool.adaptive_avg_pool2d(xd.astype(cupy.complex64), 2)
    with pytest.raises(ValueError):
        cypool.adaptive_avg_pool2d_backward(cupy.ones((2, 3, 3, 3), cupy.float32),
                                            (2, 3, 4, 4, 1))


# ---------------------------------------------------------------------------
# CUDA torch tensors: taken zero-copy, and PyTorch's own CUDA pooling agrees
# ---------------------------------------------------------------------------

def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


torch_cuda = pytest.mark.skipif(_torch_cuda() is None, reason="needs torch with CUDA")


@torch_cuda
def test_torch_cuda_tensor_is_taken_zero_copy(tools, rng):
    torch = _torch_cuda()
    t = torch.from_numpy(rng.standard_normal((2, 3, 9, 7)).astype(np.float32)).cuda()
    view = _gpu.as_device_array(t)
    assert isinstance(view, cupy.ndarray) and view.data.ptr == t.data_ptr()
    x = t.cpu().numpy()
    y = cypool.adaptive_avg_pool2d(t, (4, 3))
    check(y, cypool.adaptive_avg_pool2d(x, (4, 3)), tools, device=t.device.index)
    check(cypool.max_pool2d(t, 3, 2, 1, return_indices=True),
          cypool.max_pool2d(x, 3, 2, 1, return_indices=True), tools, device=t.device.index)
    # a channels_last-format tensor is a strided NCHW view: taken as it is
    tc = t.contiguous(memory_format=torch.channels_last)
    assert _gpu.as_device_array(tc).data.ptr == tc.data_ptr()
    check(cypool.avg_pool2d(tc, 2), cypool.avg_pool2d(x, 2), tools, device=t.device.index)


def _torch_cases():
    """(id, cypool function name, torch function name, rank, shape, args, kwargs)."""
    return [
        ("adaptive-avg-2d", "adaptive_avg_pool2d", 2, (4, 16, 15, 13), ((5, 4),), {}),
        ("adaptive-max-2d", "adaptive_max_pool2d", 2, (4, 16, 15, 13), ((5, 4),),
         {"return_indices": True}),
        ("adaptive-avg-3d", "adaptive_avg_pool3d", 3, (2, 8, 7, 9, 6), ((3, 4, 2),), {}),
        ("adaptive-max-1d", "adaptive_max_pool1d", 1, (4, 8, 29), (6,),
         {"return_indices": True}),
        ("max-2d-k3s2p1", "max_pool2d", 2, (4, 16, 28, 28), (3, 2, 1),
         {"return_indices": True}),
        ("max-2d-dilated-ceil", "max_pool2d", 2, (2, 8, 17, 19), (3, 2, 1, 2, True),
         {"return_indices": True}),
        ("max-3d-k2", "max_pool3d", 3, (2, 8, 8, 10, 12), (2,), {"return_indices": True}),
        ("max-1d-k3s2", "max_pool1d", 1, (4, 8, 31), (3, 2), {"return_indices": True}),
        ("avg-2d-k3s1p1-nocip", "avg_pool2d", 2, (4, 16, 20, 20), (3, 1, 1, False, False), {}),
        ("avg-2d-k2s2", "avg_pool2d", 2, (4, 32, 28, 28), (2, 2), {}),
        ("avg-2d-ceil-div", "avg_pool2d", 2, (2, 8, 13, 11), (3, 2, 1, True, True, 5), {}),
        ("avg-3d-k3s2p1", "avg_pool3d", 3, (2, 8, 9, 8, 7), (3, 2, 1), {}),
        ("avg-1d-k4s3p2", "avg_pool1d", 1, (4, 8, 30), (4, 3, 2), {}),
    ]


TORCH_CASES = _torch_cases()


@torch_cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cl", [False, True], ids=["NCHW", "NHWC"])
@pytest.mark.parametrize("name, fn, rank, shape, args, kw", TORCH_CASES,
                         ids=[c[0] for c in TORCH_CASES])
def test_forward_and_backward_match_torch_cuda(name, fn, rank, shape, args, kw, cl, dtype,
                                               tools, rng):
    """cypool on a CUDA torch tensor against torch.nn.functional on it (no
    NaN here: PyTorch's CUDA max kernels pick among NaNs differently).  Max
    values and indices: identical; averages: within tolerance (PyTorch's CUDA
    kernels may divide or sum in another order); gradients: within tolerance
    (PyTorch's CUDA backward adds with atomics, in no fixed order)."""
    torch = _torch_cuda()
    F = torch.nn.functional
    if cl and rank == 1:
        pytest.skip("torch has no channels-last 1d layout")
    x = rng.standard_normal(shape).astype(dtype)
    t = torch.from_numpy(x).cuda()
    if cl:
        t = t.contiguous(memory_format=torch.channels_last if rank == 2
                         else torch.channels_last_3d)
    t.requires_grad_(True)
    want = getattr(F, fn)(t, *args, **kw)
    # cypool's channels_last input is the NHWC tensor torch holds in memory
    tc = t.detach().movedim(1, -1) if cl else t.detach()
    got = getattr(cypool, fn)(tc, *args, channels_last=cl, **kw)
    dev = t.device.index
    mv = (lambda a: a.movedim(1, -1)) if cl else (lambda a: a)
    if kw.get("return_indices"):
        tv, ti = want
        check(got, (mv(tv).detach().cpu().numpy(), mv(ti).cpu().numpy()), tools, device=dev)
    else:
        tv = want
        check(got, mv(tv).detach().cpu().numpy(), tools, close=True, device=dev)
    # backward: autograd's gradient against cypool's on the device
    g = torch.from_numpy(rng.standard_normal(tuple(tv.shape)).astype(dtype)).cuda()
    (tg,) = torch.autograd.grad(tv, t, g)
    gd = cupy.asarray(mv(g).contiguous())
    b = getattr(cypool, f"{fn}_backward")
    if fn.startswith("adaptive"):
        extra = (got[1],) if kw.get("return_indices") else ()
        gi = b(gd, *extra, tuple(tc.shape), channels_last=cl)
    elif fn.startswith("max"):
        full = list(args) + [None, 0, 1, False][len(args) - 1:]   # stride, padding, ...
        gi = b(gd, got[1], tuple(tc.shape), *full, channels_last=cl)
    else:
        gi = b(gd, tuple(tc.shape), *args, channels_last=cl)
    want_g = mv(tg).cpu().numpy()
    assert isinstance(gi, cupy.ndarray) and gi.device.id == dev
    tools.assert_close(cupy.asnumpy(gi), want_g, scale=8.0)
