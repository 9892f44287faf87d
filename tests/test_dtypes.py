"""Dtype behaviour of every public pooling function (adaptive, fixed-window
and global; forward and backward).

* float16 is accepted, computed in float32 and returned as float16;
* max pooling runs natively on every integer dtype and bool (the result has
  the input's dtype), extremes included;
* average pooling of integers and bool returns float64, equal to pooling the
  float64 conversion;
* byte-swapped arrays work and give native-order results;
* complex, object, string and datetime arrays raise TypeError naming the dtype,
  and so does a non-float grad_output.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import cypool
from cypool import reference

torch = pytest.importorskip("torch")
F = torch.nn.functional

RANKS = (1, 2, 3)
SPATIAL = {1: (9,), 2: (5, 7), 3: (4, 5, 6)}
ADAPTIVE_OUT = {1: 4, 2: (3, 2), 3: (2, 3, 4)}
# Fixed windows: kernel 3, stride 2, padding 1, ceil_mode; average without
# the padding in the divisor, max with dilation 2 (no window misses the input).
AVG_ARGS = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
MAX_ARGS = dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)

FORWARD_KINDS = ("adaptive_avg", "adaptive_max", "avg", "max", "global_avg", "global_max")
BACKWARD_KINDS = ("adaptive_avg", "adaptive_max", "avg", "max")
MAX_KINDS = ("adaptive_max", "max", "global_max")
AVG_KINDS = ("adaptive_avg", "avg", "global_avg")

INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64,
              np.uint64, np.bool_]
# PyTorch 2.13 CPU runs max_pool{1,2,3}d on these (not on uint16/32/64, bool),
# and adaptive max pooling on no integer dtype at all.
TORCH_INT_MAX = {np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32, np.int64)}


# ---------------------------------------------------------------------------
# Calls, one spelling per function kind
# ---------------------------------------------------------------------------

def _name(kind, rank, backward=False):
    if kind.startswith("global"):
        op = kind.split("_")[1]
        return f"global_{op}_pool{rank}d"
    return f"{kind}_pool{rank}d" + ("_backward" if backward else "")


def _forward(kind, rank, x, channels_last=False):
    """(values, indices or None) of cypool's ``kind`` on ``x``."""
    f = getattr(cypool, _name(kind, rank))
    cl = dict(channels_last=channels_last)
    if kind == "adaptive_avg":
        return f(x, ADAPTIVE_OUT[rank], **cl), None
    if kind == "adaptive_max":
        return f(x, ADAPTIVE_OUT[rank], return_indices=True, **cl)
    if kind == "avg":
        return f(x, **AVG_ARGS, **cl), None
    if kind == "max":
        return f(x, **MAX_ARGS, return_indices=True, **cl)
    if kind == "global_avg":
        return f(x, **cl), None
    return f(x, return_indices=True, **cl)


def _backward(kind, rank, g, idx, input_shape, channels_last=False):
    f = getattr(cypool, _name(kind, rank, backward=True))
    cl = dict(channels_last=channels_last)
    if kind == "adaptive_avg":
        return f(g, input_shape, **cl)
    if kind == "adaptive_max":
        return f(g, idx, input_shape, **cl)
    if kind == "avg":
        return f(g, input_shape, **AVG_ARGS, **cl)
    return f(g, idx, input_shape, **MAX_ARGS, **cl)


def _torch_forward(kind, rank, t):
    """PyTorch's counterpart on a channels-first tensor: (values, indices)."""
    if kind == "adaptive_avg":
        return getattr(F, f"adaptive_avg_pool{rank}d")(t, ADAPTIVE_OUT[rank]), None
    if kind == "adaptive_max":
        return getattr(F, f"adaptive_max_pool{rank}d")(t, ADAPTIVE_OUT[rank],
                                                       return_indices=True)
    if kind == "avg":
        a = AVG_ARGS
        return getattr(F, f"avg_pool{rank}d")(t, a["kernel_size"], a["stride"], a["padding"],
                                              a["ceil_mode"], a["count_include_pad"]), None
    if kind == "max":
        a = MAX_ARGS
        return getattr(F, f"max_pool{rank}d")(t, a["kernel_size"], a["stride"], a["padding"],
                                              a["dilation"], a["ceil_mode"],
                                              return_indices=True)
    if kind == "global_avg":
        return getattr(F, f"adaptive_avg_pool{rank}d")(t, 1), None
    return getattr(F, f"adaptive_max_pool{rank}d")(t, 1, return_indices=True)


def _reference(kind, rank, x, channels_last=False):
    """(values, indices or None) from cypool.reference."""
    cl = dict(channels_last=channels_last)
    if kind in ("adaptive_avg", "global_avg"):
        out = ADAPTIVE_OUT[rank] if kind == "adaptive_avg" else 1
        return reference.adaptive_pool(x, out, "avg", rank, **cl), None
    if kind in ("adaptive_max", "global_max"):
        out = ADAPTIVE_OUT[rank] if kind == "adaptive_max" else 1
        return reference.adaptive_pool(x, out, "max", rank, return_indices=True, **cl)
    args = dict(AVG_ARGS if kind == "avg" else MAX_ARGS)
    k = args.pop("kernel_size")
    if kind == "max":
        return reference.fixed_pool(x, k, "max", rank, return_indices=True, **args, **cl)
    return reference.fixed_pool(x, k, "avg", rank, **args, **cl), None


def _to_nc(a, rank, channels_last):
    return np.moveaxis(a, -1, a.ndim - rank - 1) if channels_last else a


def _from_nc(a, rank, channels_last):
    return np.moveaxis(a, a.ndim - rank - 1, -1) if channels_last else a


def _shape(rank, channels_last, batched=True, n=2, c=3):
    lead = (n,) if batched else ()
    sp = SPATIAL[rank]
    return lead + (sp + (c,) if channels_last else (c,) + sp)


def _assert_same(got, want, what):
    """Same shape, dtype and values (NaN where NaN), signs of zeros included."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if got.dtype.kind == "f":
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN positions differ"
        m = ~np.isnan(got)
        bad = (got[m] != want[m]) | (np.signbit(got[m]) != np.signbit(want[m]))
        assert not bad.any(), (f"{what}: {bad.sum()} of {m.sum()} differ: got "
                               f"{got[m][bad][:5]} want {want[m][bad][:5]}")
    else:
        np.testing.assert_array_equal(got, want, err_msg=what, strict=True)


def _assert_half(got, want, maxulp, what):
    """float16 results equal, or within ``maxulp`` units in the last place;
    NaN in the same places."""
    assert got.dtype == np.float16 and want.dtype == np.float16, (got.dtype, want.dtype)
    assert got.shape == want.shape, f"{what}: {got.shape} != {want.shape}"
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN positions differ"
    if maxulp == 0:
        _assert_same(got, want, what)
    else:
        np.testing.assert_array_max_ulp(got[~nan], want[~nan], maxulp=maxulp)


def _half_input(rng, shape, special):
    x = rng.standard_normal(shape) * 30
    if special:
        r = rng.random(shape)
        x[r < 0.05] = np.nan
        x[(r >= 0.05) & (r < 0.1)] = np.inf
        x[(r >= 0.1) & (r < 0.15)] = -np.inf
        x[(r >= 0.15) & (r < 0.3)] = np.round(x[(r >= 0.15) & (r < 0.3)])
    return x.astype(np.float16)


# ---------------------------------------------------------------------------
# float16
# ---------------------------------------------------------------------------

# Why these tolerances.  cypool pools float16 by widening to float32,
# accumulating there and rounding once to float16; PyTorch's CPU half
# kernels do the same (opmath = float).  So cypool's float16 result is
# PyTorch's float32 result on the widened input, rounded once: bit-identical
# wherever cypool's float32 path is bit-identical to PyTorch's (every fixed
# and adaptive kernel).  The one exception is an adaptive average to a
# single output (global_avg, adaptive to 1): PyTorch computes it with
# ``mean()``, whose pairwise/vectorised summation order can differ from a
# sequential sum by an ulp of float32, which after rounding to float16 is at
# most 1 ulp of float16.  (Maxima and indices are exact: no arithmetic.)
HALF_MAXULP = {"adaptive_avg": 0, "avg": 0, "global_avg": 1,
               "adaptive_max": 0, "max": 0, "global_max": 0}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("special", [False, True], ids=["normal", "nan-inf"])
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", FORWARD_KINDS)
def test_float16_forward(kind, rank, special, channels_last):
    rng = np.random.default_rng([1, FORWARD_KINDS.index(kind), rank, special, channels_last])
    x = _half_input(rng, _shape(rank, channels_last), special)
    x_before = x.copy()
    y, idx = _forward(kind, rank, x, channels_last)
    np.testing.assert_array_equal(x, x_before)
    assert y.dtype == np.float16, f"{kind}: result dtype {y.dtype}"
    t = torch.from_numpy(np.ascontiguousarray(_to_nc(x, rank, channels_last)).astype(np.float32))
    ty, ti = _torch_forward(kind, rank, t)
    want = np.ascontiguousarray(_from_nc(ty.numpy(), rank, channels_last)).astype(np.float16)
    _assert_half(y, want, HALF_MAXULP[kind], f"{kind}{rank}d float16")
    if ti is not None:
        _assert_same(idx, np.ascontiguousarray(_from_nc(ti.numpy(), rank, channels_last)),
                     f"{kind}{rank}d float16 indices")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", BACKWARD_KINDS)
def test_float16_backward(kind, rank, channels_last):
    """float16 grad_output -> float16 gradient, PyTorch's float32 gradient
    (on the widened grad_output) rounded once."""
    rng = np.random.default_rng([2, BACKWARD_KINDS.index(kind), rank, channels_last])
    x = _half_input(rng, _shape(rank, channels_last), special=False)
    y, idx = _forward(kind, rank, x, channels_last)
    g = (rng.standard_normal(y.shape) * 10).astype(np.float16)
    gx = _backward(kind, rank, g, idx, x.shape, channels_last)
    assert gx.dtype == np.float16 and gx.shape == x.shape
    t = torch.from_numpy(np.ascontiguousarray(_to_nc(x, rank, channels_last)).astype(np.float32))
    t.requires_grad_(True)
    ty, ti = _torch_forward(kind, rank, t)
    if ti is not None:
        _assert_same(idx, np.ascontiguousarray(_from_nc(ti.numpy(), rank, channels_last)),
                     "indices")
    ty.backward(torch.from_numpy(np.ascontiguousarray(_to_nc(g, rank, channels_last))
                                 .astype(np.float32)))
    want = np.ascontiguousarray(_from_nc(t.grad.numpy(), rank, channels_last)).astype(np.float16)
    _assert_half(gx, want, 0, f"{kind}{rank}d float16 backward")
    # float16 gradient of a float32 forward is still float16
    y32, idx32 = _forward(kind, rank, x.astype(np.float32), channels_last)
    gx2 = _backward(kind, rank, g, idx32, x.shape, channels_last)
    assert gx2.dtype == np.float16
    _assert_same(gx2, gx, "float16 grad of float32 forward")


def test_float16_accumulates_in_float32():
    """Section 1.6: float16 [2048, 1, 1, 1] averaged by a kernel of 4 gives 513
    (float32 sum 2051, / 4 = 512.75, rounded once); a float16 running sum
    would stall at 2048 and give 512."""
    x = np.array([[2048, 1, 1, 1]], np.float16)
    t = torch.from_numpy(x)
    for y, ty in ((cypool.avg_pool1d(x, 4), F.avg_pool1d(t, 4)),
                  (cypool.adaptive_avg_pool1d(x, 1), F.adaptive_avg_pool1d(t, 1)),
                  (cypool.global_avg_pool1d(x), F.adaptive_avg_pool1d(t, 1))):
        assert y.dtype == np.float16
        assert y.tolist() == [[513.0]] == ty.tolist()
    # divisor 1: the sum itself, 2051 -> 2052 in float16 (a float16 sum: 2048)
    assert cypool.avg_pool1d(x, 4, divisor_override=1).tolist() == [[2052.0]]
    # backward: one input element collects 2049 gradients, 2048 + 1 + ... + 1:
    # 4096 in float32 (exact in float16 too); a float16 running sum stays 2048
    g = np.ones((1, 2049), np.float16)
    g[0, 0] = 2048
    gx = cypool.adaptive_avg_pool1d_backward(g, (1, 1))
    assert gx.dtype == np.float16 and gx.tolist() == [[4096.0]]
    gx = cypool.adaptive_max_pool1d_backward(g, np.zeros((1, 2049), np.int64), (1, 1))
    assert gx.dtype == np.float16 and gx.tolist() == [[4096.0]]


# ---------------------------------------------------------------------------
# Integers and bool
# ---------------------------------------------------------------------------

def _int_input(rng, shape, dtype):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) < 0.3
    info = np.iinfo(dt)
    x = rng.integers(-3, 4, shape)
    x = np.clip(x, info.min, info.max).astype(dt)               # ties
    r = rng.random(shape)
    x[r < 0.35] = info.min                                      # whole windows of the lowest
    x[(r >= 0.35) & (r < 0.45)] = info.max
    x[(r >= 0.45) & (r < 0.5)] = info.min + 1
    x[(r >= 0.5) & (r < 0.55)] = info.max - 1
    # one plane entirely the lowest value: index = first valid element
    x.reshape((-1,) + x.shape[-len(shape) + 1:])[0] = info.min
    return x


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", MAX_KINDS)
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_integer_max_native(dtype, kind, rank, channels_last):
    rng = np.random.default_rng([3, INT_DTYPES.index(dtype), MAX_KINDS.index(kind), rank])
    x = _int_input(rng, _shape(rank, channels_last), dtype)
    x_before = x.copy()
    y, idx = _forward(kind, rank, x, channels_last)
    np.testing.assert_array_equal(x, x_before)
    assert y.dtype == np.dtype(dtype), f"result dtype {y.dtype} for {np.dtype(dtype)}"
    assert idx.dtype == np.int64
    ry, ri = _reference(kind, rank, x, channels_last)
    if kind == "global_max":
        ry = ry.reshape(y.shape)
        ri = ri.reshape(y.shape)
    _assert_same(y, ry, f"{kind} values vs reference")
    _assert_same(idx, ri, f"{kind} indices vs reference")
    # the same values as the float64 computation where that is exact
    if np.dtype(dtype).itemsize <= 4:
        y64, i64 = _forward(kind, rank, x.astype(np.float64), channels_last)
        np.testing.assert_array_equal(y.astype(np.float64), y64)
        np.testing.assert_array_equal(idx, i64)
    if kind == "max" and np.dtype(dtype) in TORCH_INT_MAX:
        t = torch.from_numpy(np.ascontiguousarray(_to_nc(x, rank, channels_last)))
        ty, ti = _torch_forward(kind, rank, t)
        _assert_same(y, np.ascontiguousarray(_from_nc(ty.numpy(), rank, channels_last)),
                     "values vs torch")
        _assert_same(idx, np.ascontiguousarray(_from_nc(ti.numpy(), rank, channels_last)),
                     "indices vs torch")
    # a float gradient through integer-forward indices
    if kind != "global_max":
        g = rng.standard_normal(y.shape)
        gx = _backward(kind, rank, g, idx, x.shape, channels_last)
        assert gx.dtype == np.float64 and gx.shape == x.shape
        y64, i64 = _forward(kind, rank, x.astype(np.float64), channels_last)
        if np.array_equal(i64, idx):
            _assert_same(gx, _backward(kind, rank, g, i64, x.shape, channels_last),
                         "gradient through integer indices")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int64, np.uint64])
def test_integer_max_extremes_exact(dtype):
    """Values at the ends of the range survive exactly (no float detour)."""
    info = np.iinfo(dtype)
    x = np.array([[info.min, info.max - 1, info.max, info.min + 1, info.min, info.min]], dtype)
    y, idx = cypool.max_pool1d(x, 2, return_indices=True)
    assert y.dtype == np.dtype(dtype)
    assert y.tolist() == [[info.max - 1, info.max, info.min]]
    assert idx.tolist() == [[1, 2, 4]]
    y, idx = cypool.adaptive_max_pool1d(x, 2, return_indices=True)
    assert y.tolist() == [[info.max, info.min + 1]] and idx.tolist() == [[2, 3]]
    y, idx = cypool.global_max_pool1d(x, keepdims=False, return_indices=True)
    assert y.tolist() == [info.max] and idx.tolist() == [2]
    # padding never wins, even against the lowest value
    y, idx = cypool.max_pool1d(np.full((1, 3), info.min, dtype), 3, 1, 1, return_indices=True)
    assert y.tolist() == [[info.min] * 3] and idx.tolist() == [[0, 0, 1]]


def test_bool_max_is_any():
    x = np.array([[False, True, False, False, True, True, False, False]])
    y, idx = cypool.max_pool1d(x, 2, return_indices=True)
    assert y.dtype == np.bool_
    assert y.tolist() == [[True, False, True, False]] and idx.tolist() == [[1, 2, 4, 6]]
    y, idx = cypool.global_max_pool1d(x, return_indices=True)
    assert y.tolist() == [[True]] and idx.tolist() == [[1]]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", AVG_KINDS)
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_integer_avg_is_float64(dtype, kind, rank, channels_last):
    """Averages of integers or bool: float64, equal to averaging the float64
    conversion (so no integer overflow and no truncating division)."""
    rng = np.random.default_rng([4, INT_DTYPES.index(dtype), AVG_KINDS.index(kind), rank])
    x = _int_input(rng, _shape(rank, channels_last), dtype)
    y, _ = _forward(kind, rank, x, channels_last)
    assert y.dtype == np.float64, f"{kind} of {np.dtype(dtype)} gave {y.dtype}"
    y64, _ = _forward(kind, rank, x.astype(np.float64), channels_last)
    _assert_same(y, y64, f"{kind} of {np.dtype(dtype)} vs float64")
    # ... which is PyTorch's float64 result (not its truncating int64 average)
    if kind != "global_avg":
        t = torch.from_numpy(np.ascontiguousarray(_to_nc(x, rank, channels_last))
                             .astype(np.float64))
        ty, _ = _torch_forward(kind, rank, t)
        _assert_same(y, np.ascontiguousarray(_from_nc(ty.numpy(), rank, channels_last)),
                     f"{kind} of {np.dtype(dtype)} vs torch float64")


def test_int64_avg_does_not_overflow_or_truncate():
    big = np.iinfo(np.int64).max
    x = np.array([[big, big, -3, -4]], np.int64)
    y = cypool.avg_pool1d(x, 2)
    assert y.dtype == np.float64
    assert y.tolist() == [[float(big), -3.5]]
    assert cypool.global_avg_pool1d(np.array([[1, 2], [2, 2]], np.int64),
                                    keepdims=False).tolist() == [1.5, 2.0]
    ub = np.iinfo(np.uint64).max
    assert cypool.adaptive_avg_pool1d(np.array([[ub, ub]], np.uint64), 1).tolist() == \
        [[float(ub)]]
    assert cypool.avg_pool1d(np.array([[True, False, True, True]]), 2).tolist() == [[0.5, 1.0]]


# ---------------------------------------------------------------------------
# Byte order
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("swapped", [">f4", ">f8", ">f2", ">i4", ">u2", ">i8"])
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", FORWARD_KINDS)
def test_byteswapped_forward(kind, rank, swapped):
    dt = np.dtype(swapped)
    if dt.kind in "iu" and kind in AVG_KINDS:
        want_dtype = np.dtype(np.float64)
    else:
        want_dtype = dt.newbyteorder("=")
    rng = np.random.default_rng([5, rank, FORWARD_KINDS.index(kind)])
    native = (rng.standard_normal(_shape(rank, False)) * 100).astype(dt.newbyteorder("="))
    x = native.astype(dt)
    assert x.dtype.byteorder == ">" and np.array_equal(x, native)
    y, idx = _forward(kind, rank, x)
    yn, idxn = _forward(kind, rank, native)
    assert y.dtype == want_dtype and y.dtype.isnative, f"{swapped}: result dtype {y.dtype}"
    _assert_same(y, yn, f"{kind} of {swapped} vs native")
    if idx is not None:
        _assert_same(idx, idxn, f"{kind} indices of {swapped} vs native")


@pytest.mark.parametrize("swapped", [">f4", ">f8", ">f2"])
@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", BACKWARD_KINDS)
def test_byteswapped_backward(kind, rank, swapped):
    dt = np.dtype(swapped)
    rng = np.random.default_rng([6, rank, BACKWARD_KINDS.index(kind)])
    x = rng.standard_normal(_shape(rank, True)).astype(dt.newbyteorder("="))
    y, idx = _forward(kind, rank, x, channels_last=True)
    g = rng.standard_normal(y.shape).astype(dt.newbyteorder("="))
    gx = _backward(kind, rank, g.astype(dt), idx, x.shape, channels_last=True)
    gn = _backward(kind, rank, g, idx, x.shape, channels_last=True)
    assert gx.dtype == dt.newbyteorder("=") and gx.dtype.isnative
    _assert_same(gx, gn, f"{kind} backward of {swapped} vs native")


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", ["adaptive_max", "max"])
@pytest.mark.parametrize("idx_dtype", [">i8", "<i4", ">i4", "<u8"])
def test_indices_of_other_integer_dtypes(kind, rank, idx_dtype):
    """max backward reads indices of any integer dtype and byte order right
    (or refuses them): never a silently wrong gradient."""
    rng = np.random.default_rng([7, rank])
    x = rng.standard_normal(_shape(rank, False))
    y, idx = _forward(kind, rank, x)
    g = rng.standard_normal(y.shape)
    want = _backward(kind, rank, g, idx, x.shape)
    try:
        got = _backward(kind, rank, g, idx.astype(idx_dtype), x.shape)
    except (TypeError, ValueError):
        return
    _assert_same(got, want, f"{kind} backward with {idx_dtype} indices")


# ---------------------------------------------------------------------------
# Refused dtypes
# ---------------------------------------------------------------------------

def _bad_arrays(shape):
    n = int(np.prod(shape))
    arrays = [
        np.zeros(shape, np.complex64),
        np.zeros(shape, np.complex128),
        np.array([1.5] * n, dtype=object).reshape(shape),
        np.full(shape, "a"),
        np.full(shape, b"a"),
        np.zeros(shape, "datetime64[D]"),
        np.zeros(shape, "timedelta64[s]"),
    ]
    if np.dtype(np.longdouble).itemsize > 8:
        arrays.append(np.zeros(shape, np.longdouble))
    return arrays


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", FORWARD_KINDS)
def test_refused_dtypes_forward(kind, rank):
    for x in _bad_arrays(_shape(rank, False)):
        with pytest.raises(TypeError, match=re.escape(str(x.dtype))):
            _forward(kind, rank, x)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("kind", BACKWARD_KINDS)
def test_refused_grad_dtypes(kind, rank):
    """grad_output must be floating point: integers, bool, complex, ... raise
    TypeError naming the dtype."""
    x = np.random.default_rng(8).standard_normal(_shape(rank, False))
    y, idx = _forward(kind, rank, x)
    bad = [np.ones(y.shape, t) for t in (np.int8, np.int32, np.int64, np.uint8, np.bool_)]
    bad += _bad_arrays(y.shape)
    for g in bad:
        with pytest.raises(TypeError, match=re.escape(str(g.dtype))):
            _backward(kind, rank, g, idx, x.shape)
