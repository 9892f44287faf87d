"""Argument validation, input immutability and ``out=``.

Every bad argument must raise ``ValueError`` or ``TypeError`` before any
work, with a message that names the function and the argument.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import cypool

RANKS = pytest.mark.parametrize("rank", [1, 2, 3])
LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["NC", "NL"])

FORWARD = ["adaptive_avg", "adaptive_max", "global_avg", "global_max"]
ADAPTIVE = ["adaptive_avg", "adaptive_max"]


def _name(kind, rank):
    if kind.endswith("_backward"):
        return f"{kind[:-9]}_pool{rank}d_backward"
    return f"{kind}_pool{rank}d"


def _f(kind, rank):
    return getattr(cypool, _name(kind, rank))


def _raises(exc, kind, rank, arg):
    """pytest.raises that also wants the function's and the argument's names."""
    return pytest.raises(exc, match=rf"{re.escape(_name(kind, rank))}\(\).*{re.escape(arg)}")


def _x(rank, n=2, c=3, size=5, dtype=np.float32, channels_last=False, rng=None):
    rng = rng or np.random.default_rng(0)
    sp = (size,) * rank
    shape = (n,) + (sp + (c,) if channels_last else (c,) + sp)
    return rng.standard_normal(shape).astype(dtype)


def _call(kind, rank, x, **kw):
    """Call a forward function with a default output size where it takes one."""
    if kind.startswith("adaptive"):
        return _f(kind, rank)(x, kw.pop("output_size", 2), **kw)
    return _f(kind, rank)(x, **kw)


# ---------------------------------------------------------------------------
# Forward: shapes and arguments
# ---------------------------------------------------------------------------

@LAYOUTS
@pytest.mark.parametrize("kind", FORWARD)
@pytest.mark.parametrize("rank,nd", [(r, nd) for r in (1, 2, 3) for nd in range(7)
                                     if nd not in (r + 1, r + 2)])
def test_wrong_ndim(kind, rank, nd, channels_last):
    x = np.ones((2,) * nd, np.float32)
    with _raises(ValueError, kind, rank, f"x must have {rank + 1} (unbatched) or {rank + 2}"):
        _call(kind, rank, x, channels_last=channels_last)


@RANKS
@LAYOUTS
@pytest.mark.parametrize("kind", FORWARD)
@pytest.mark.parametrize("batched", [True, False])
def test_empty_spatial_dim(kind, rank, channels_last, batched):
    for axis in range(rank):
        sp = [4] * rank
        sp[axis] = 0
        shape = tuple(sp) + (3,) if channels_last else (3,) + tuple(sp)
        if batched:
            shape = (2,) + shape
        with _raises(ValueError, kind, rank, "non-empty spatial"):
            _call(kind, rank, np.ones(shape), channels_last=channels_last)


@RANKS
@pytest.mark.parametrize("kind", ADAPTIVE)
@pytest.mark.parametrize("output_size,exc", [
    (-1, ValueError),
    ("neg-entry", ValueError),
    ("wrong-length", ValueError),
    ("too-long", ValueError),
    (2.0, TypeError),
    ("float-entry", TypeError),
    (True, TypeError),
    ("bool-entry", TypeError),
    ("3", TypeError),
    ("abc", TypeError),
    (b"2", TypeError),
    (np.float64(2), TypeError),
    ({2: 2}, TypeError),
], ids=lambda v: repr(v) if not isinstance(v, type) else v.__name__)
def test_bad_output_size(kind, rank, output_size, exc):
    special = {
        "neg-entry": (2,) * (rank - 1) + (-3,),
        "wrong-length": (2,) * (rank + 1),
        "too-long": [2] * (rank + 2),
        "float-entry": (2,) * (rank - 1) + (1.5,),
        "bool-entry": (2,) * (rank - 1) + (True,),
    }
    if rank == 1 and output_size == "wrong-length":
        special["wrong-length"] = ()
    if isinstance(output_size, str) and output_size in special:
        output_size = special[output_size]
    with _raises(exc, kind, rank, "output_size"):
        _f(kind, rank)(_x(rank), output_size)


@RANKS
@pytest.mark.parametrize("kind", FORWARD)
@pytest.mark.parametrize("value", [1, 0, "True", None, 1.0, [True]], ids=repr)
def test_bad_channels_last(kind, rank, value):
    with _raises(TypeError, kind, rank, "channels_last"):
        _call(kind, rank, _x(rank), channels_last=value)


@RANKS
@pytest.mark.parametrize("kind", ["adaptive_max", "global_max"])
@pytest.mark.parametrize("value", [1, "yes", None, 0.0], ids=repr)
def test_bad_return_indices(kind, rank, value):
    with _raises(TypeError, kind, rank, "return_indices"):
        _call(kind, rank, _x(rank), return_indices=value)


@RANKS
@pytest.mark.parametrize("kind", ["global_avg", "global_max"])
@pytest.mark.parametrize("value", [1, "no", None], ids=repr)
def test_bad_keepdims(kind, rank, value):
    with _raises(TypeError, kind, rank, "keepdims"):
        _call(kind, rank, _x(rank), keepdims=value)


@RANKS
@pytest.mark.parametrize("kind", FORWARD)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, object, "U3", "S3",
                                   "datetime64[s]", "timedelta64[s]"], ids=str)
def test_unsupported_dtype(kind, rank, dtype):
    x = np.zeros((2, 3) + (4,) * rank).astype(dtype)
    with _raises(TypeError, kind, rank, "x has dtype"):
        _call(kind, rank, x)


@RANKS
@pytest.mark.parametrize("kind", FORWARD)
def test_ragged_list(kind, rank):
    with _raises(TypeError, kind, rank, "x must be an array"):
        _call(kind, rank, [[1.0, 2.0], [3.0]])


def test_valid_argument_spellings():
    """Ints of any integer type, lists, None entries and NumPy bools are accepted."""
    x = _x(2)
    want = cypool.adaptive_avg_pool2d(x, (2, 3))
    for size in ([2, 3], (np.int64(2), np.uint8(3)), (2, np.int32(3))):
        np.testing.assert_array_equal(cypool.adaptive_avg_pool2d(x, size), want)
    assert cypool.adaptive_avg_pool2d(x, (None, 3)).shape == (2, 3, 5, 3)
    assert cypool.adaptive_avg_pool2d(x, None).shape == x.shape
    np.testing.assert_array_equal(
        cypool.adaptive_avg_pool2d(np.moveaxis(x, 1, -1), (2, 3), channels_last=np.True_),
        np.moveaxis(want, 1, -1))
    v, i = cypool.adaptive_max_pool2d(x, 2, np.True_)
    assert i.dtype == np.int64


# ---------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------

def _result_dtype(kind, dtype):
    dtype = np.dtype(dtype)
    if kind.endswith("avg") and dtype.kind in "iub":
        return np.dtype(np.float64)
    return dtype


@RANKS
@pytest.mark.parametrize("kind", FORWARD)
@pytest.mark.parametrize("problem", ["shape", "dtype", "readonly", "list", "byteswapped",
                                     "transposed-shape"])
def test_bad_out(kind, rank, problem):
    x = _x(rank)
    want = _call(kind, rank, x)
    exc, msg = ValueError, "out must have"
    if problem == "shape":
        out = np.empty(want.shape[:-1] + (want.shape[-1] + 1,), want.dtype)
    elif problem == "transposed-shape":
        out = np.empty(want.shape[::-1] if want.shape[::-1] != want.shape
                       else want.shape + (1,), want.dtype)
    elif problem == "dtype":
        out = np.empty(want.shape, np.float64)
    elif problem == "byteswapped":
        out = np.empty(want.shape, want.dtype.newbyteorder(">"))
    elif problem == "readonly":
        out = np.empty(want.shape, want.dtype)
        out.setflags(write=False)
        msg = "out is read-only"
    else:
        out = np.zeros(want.shape).tolist()
        exc, msg = TypeError, "out must be a NumPy array"
    with _raises(exc, kind, rank, msg):
        _call(kind, rank, x, out=out)


@RANKS
@pytest.mark.parametrize("kind", ["adaptive_max", "global_max"])
@pytest.mark.parametrize("problem", ["single-array", "triple", "indices-int32",
                                     "indices-shape", "values-dtype", "indices-list",
                                     "indices-readonly"])
def test_bad_out_pair(kind, rank, problem):
    x = _x(rank)
    v, i = _call(kind, rank, x, return_indices=True)
    exc = ValueError
    if problem == "single-array":
        out, exc, arg = v.copy(), TypeError, "out must be a (values, indices) pair"
    elif problem == "triple":
        out, exc, arg = (v.copy(), i.copy(), i.copy()), TypeError, "out must be a"
    elif problem == "indices-int32":
        out, arg = (v.copy(), i.astype(np.int32)), "out[1] must have"
    elif problem == "indices-shape":
        out, arg = (v.copy(), i.reshape(-1).copy()), "out[1] must have"
    elif problem == "values-dtype":
        out, arg = (v.astype(np.float64), i.copy()), "out must have"
    elif problem == "indices-list":
        out, exc, arg = (v.copy(), i.tolist()), TypeError, "out[1] must be a NumPy array"
    else:
        ro = i.copy()
        ro.setflags(write=False)
        out, arg = (v.copy(), ro), "out[1] is read-only"
    with _raises(exc, kind, rank, arg):
        _call(kind, rank, x, return_indices=True, out=out)


def _strided_out(shape, dtype, fill):
    """A non-contiguous view (every other element along every axis) of a bigger
    buffer filled with ``fill``; returns (view, buffer)."""
    buf = np.full(tuple(2 * s + 1 for s in shape), fill, dtype)
    return buf[tuple(slice(1, None, 2) for _ in shape)], buf


@RANKS
@LAYOUTS
@pytest.mark.parametrize("kind", FORWARD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int16, np.bool_])
@pytest.mark.parametrize("where", ["contiguous", "strided", "fortran"])
def test_out_is_returned_and_filled(kind, rank, channels_last, dtype, where):
    x = _x(rank, channels_last=channels_last)
    if np.dtype(dtype).kind in "iub":
        x = (x * 3).astype(dtype)
    else:
        x = x.astype(dtype)
    kw = dict(channels_last=channels_last)
    want = _call(kind, rank, x, **kw)
    rdt = _result_dtype(kind, dtype)
    assert want.dtype == rdt
    sentinel = 7 if rdt.kind != "b" else True
    if where == "contiguous":
        out, buf = np.full(want.shape, sentinel, rdt), None
    elif where == "fortran":
        out, buf = np.asfortranarray(np.full(want.shape, sentinel, rdt)), None
    else:
        out, buf = _strided_out(want.shape, rdt, sentinel)
        assert not out.flags.c_contiguous
    before = None if buf is None else buf.copy()
    res = _call(kind, rank, x, out=out, **kw)
    assert res is out
    np.testing.assert_array_equal(out, want, strict=True)
    if buf is not None:      # nothing outside the view was written
        mask = np.ones(buf.shape, bool)
        mask[tuple(slice(1, None, 2) for _ in want.shape)] = False
        np.testing.assert_array_equal(buf[mask], before[mask])


@RANKS
@LAYOUTS
@pytest.mark.parametrize("kind,keepdims", [("adaptive_max", None), ("global_max", True),
                                           ("global_max", False)])
@pytest.mark.parametrize("strided", [False, True])
def test_out_pair_is_returned_and_filled(kind, rank, channels_last, keepdims, strided):
    x = _x(rank, channels_last=channels_last)
    kw = dict(channels_last=channels_last, return_indices=True)
    if keepdims is not None:
        kw["keepdims"] = keepdims
    wv, wi = _call(kind, rank, x, **kw)
    if strided:
        ov, _ = _strided_out(wv.shape, wv.dtype, -5)
        oi, _ = _strided_out(wi.shape, wi.dtype, -5)
    else:
        ov, oi = np.full(wv.shape, -5, wv.dtype), np.full(wi.shape, -5, wi.dtype)
    for pair in ((ov, oi), [ov, oi]):
        ov[...] = -5
        oi[...] = -5
        rv, ri = _call(kind, rank, x, out=pair, **kw)
        assert rv is ov and ri is oi
        np.testing.assert_array_equal(ov, wv, strict=True)
        np.testing.assert_array_equal(oi, wi, strict=True)


@RANKS
@pytest.mark.parametrize("kind", ["adaptive_avg", "adaptive_max"])
def test_out_may_alias_input(kind, rank):
    """out= the input itself (same shape with output_size None): the result is
    that of the unmodified input."""
    x = _x(rank, size=4)
    want = _f(kind, rank)(x, None)
    res = _f(kind, rank)(x, None, out=x)
    assert res is x
    np.testing.assert_array_equal(x, want)


@RANKS
@LAYOUTS
@pytest.mark.parametrize("kind", ["global_avg", "global_max"])
@pytest.mark.parametrize("batched", [True, False])
def test_keepdims_shapes(kind, rank, channels_last, batched):
    x = _x(rank, n=2, c=3, size=4, channels_last=channels_last)
    if not batched:
        x = x[0]
    lead = (2, 3) if batched else (3,)
    kept = _call(kind, rank, x, channels_last=channels_last)
    ones = (1,) * rank
    assert kept.shape == ((2,) if batched else ()) + (ones + (3,) if channels_last
                                                     else (3,) + ones)
    flat = _call(kind, rank, x, keepdims=False, channels_last=channels_last)
    assert flat.shape == lead
    np.testing.assert_array_equal(flat, kept.reshape(lead))
    if kind == "global_max":
        v, i = _call(kind, rank, x, keepdims=False, return_indices=True,
                     channels_last=channels_last)
        assert v.shape == i.shape == lead
        np.testing.assert_array_equal(v, flat)


# ---------------------------------------------------------------------------
# The input is never modified
# ---------------------------------------------------------------------------

@RANKS
@LAYOUTS
@pytest.mark.parametrize("kind", FORWARD)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.uint8, np.bool_,
                                   np.dtype(">f4")], ids=str)
def test_forward_leaves_input_alone(kind, rank, channels_last, dtype):
    rng = np.random.default_rng(rank)
    x = _x(rank, channels_last=channels_last, rng=rng)
    if np.dtype(dtype).kind == "f":
        x[..., 0] = np.nan
        x = x.astype(dtype)
    elif np.dtype(dtype).kind == "b":
        x = x > 0
    else:
        x = np.abs(x * 50).astype(dtype)
    views = {"contiguous": x, "reversed": x[..., ::-1], "strided": x[:, ::2]}
    for name, v in views.items():
        copy = v.copy()
        kw = dict(channels_last=channels_last)
        if kind.endswith("max"):
            kw["return_indices"] = True
        _call(kind, rank, v, **kw)
        np.testing.assert_array_equal(v, copy, err_msg=name)
        assert v.dtype == copy.dtype
        ro = v.copy()
        ro.setflags(write=False)
        _call(kind, rank, ro, **kw)      # read-only input is fine
        np.testing.assert_array_equal(ro, copy)


@RANKS
@LAYOUTS
def test_backward_leaves_inputs_alone(rank, channels_last):
    x = _x(rank, channels_last=channels_last)
    kw = dict(channels_last=channels_last)
    v, i = cypool.__dict__[f"adaptive_max_pool{rank}d"](x, 3, return_indices=True, **kw)
    g = np.random.default_rng(1).standard_normal(v.shape).astype(np.float32)
    for arr in (g, i):
        arr.setflags(write=False)
    g_copy, i_copy = g.copy(), i.copy()
    _f("adaptive_avg_backward", rank)(g, x.shape, **kw)
    _f("adaptive_max_backward", rank)(g, i, x.shape, **kw)
    np.testing.assert_array_equal(g, g_copy)
    np.testing.assert_array_equal(i, i_copy)


# ---------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------

def _fwd_for_backward(rank, channels_last=False, dtype=np.float32):
    x = _x(rank, channels_last=channels_last, dtype=dtype)
    v, i = _f("adaptive_max", rank)(x, 3, return_indices=True, channels_last=channels_last)
    return x, v, i


def _bwd(kind, rank, g, idx, shape, **kw):
    if kind == "adaptive_avg_backward":
        return _f(kind, rank)(g, shape, **kw)
    return _f(kind, rank)(g, idx, shape, **kw)


BACKWARD = ["adaptive_avg_backward", "adaptive_max_backward"]


@RANKS
@LAYOUTS
@pytest.mark.parametrize("kind", BACKWARD)
@pytest.mark.parametrize("problem", ["batch", "channels", "unbatched-vs-batched"])
def test_grad_output_shape_mismatch(kind, rank, channels_last, problem):
    x, v, i = _fwd_for_backward(rank, channels_last)
    shape = list(x.shape)
    if problem == "batch":
        shape[0] += 1
    elif problem == "channels":
        shape[-1 if channels_last else 1] += 1
    else:
        shape = shape[1:]
    with _raises(ValueError, kind, rank, "grad_output has shape"):
        _bwd(kind, rank, v, i, tuple(shape), channels_last=channels_last)


@RANKS
@pytest.mark.parametrize("kind", BACKWARD)
def test_grad_output_wrong_ndim_or_empty(kind, rank):
    x, v, i = _fwd_for_backward(rank)
    with _raises(ValueError, kind, rank, "grad_output must have"):
        _bwd(kind, rank, v[..., None], i[..., None], x.shape)
    empty = v[..., :0]
    with _raises(ValueError, kind, rank, "grad_output must have non-empty"):
        _bwd(kind, rank, empty, i[..., :0], x.shape)


@RANKS
@pytest.mark.parametrize("kind", BACKWARD)
@pytest.mark.parametrize("problem,exc,arg", [
    ("int", TypeError, "input_shape must be a tuple"),
    ("array", TypeError, "input_shape must be a tuple"),
    ("string", TypeError, "input_shape must be a tuple"),
    ("negative", ValueError, "input_shape must be >= 0"),
    ("float-entry", TypeError, "input_shape must be an integer"),
    ("bool-entry", TypeError, "input_shape must be an integer"),
    ("too-short", ValueError, "input_shape must have"),
    ("too-long", ValueError, "input_shape must have"),
    ("empty-spatial", ValueError, "input_shape must have non-empty"),
])
def test_bad_input_shape(kind, rank, problem, exc, arg):
    x, v, i = _fwd_for_backward(rank)
    s = x.shape
    shape = {
        "int": 5,
        "array": np.array(s),
        "string": "2,3,5",
        "negative": (-s[0],) + s[1:],
        "float-entry": (float(s[0]),) + s[1:],
        "bool-entry": (True,) + s[1:],
        "too-short": s[:rank],
        "too-long": s + (5,),
        "empty-spatial": s[:-1] + (0,),
    }[problem]
    with _raises(exc, kind, rank, arg):
        _bwd(kind, rank, v, i, shape)


@RANKS
@pytest.mark.parametrize("problem,exc,arg", [
    ("shape", ValueError, "indices must have grad_output's shape"),
    ("float", TypeError, "indices must be an integer array"),
    ("bool", TypeError, "indices must be an integer array"),
    ("too-big", ValueError, "indices must lie in"),
    ("too-small", ValueError, "indices must lie in"),
    ("complex", TypeError, "indices has dtype"),
])
def test_bad_indices(rank, problem, exc, arg):
    x, v, i = _fwd_for_backward(rank)
    plane = int(np.prod(x.shape[2:]))
    bad = i.copy()
    if problem == "shape":
        bad = i[..., :-1]
    elif problem == "float":
        bad = i.astype(np.float64)
    elif problem == "bool":
        bad = i > 0
    elif problem == "complex":
        bad = i.astype(np.complex128)
    elif problem == "too-big":
        bad.reshape(-1)[3] = plane
    else:
        bad.reshape(-1)[3] = -2
    with _raises(exc, "adaptive_max_backward", rank, arg):
        _f("adaptive_max_backward", rank)(v, bad, x.shape)


@RANKS
@pytest.mark.parametrize("kind", BACKWARD)
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_grad_output(kind, rank, dtype):
    x, v, i = _fwd_for_backward(rank)
    with _raises(TypeError, kind, rank, "grad_output must be float16, float32 or float64"):
        _bwd(kind, rank, v.astype(dtype), i, x.shape)


@RANKS
@pytest.mark.parametrize("kind", BACKWARD)
@pytest.mark.parametrize("dtype", [np.complex64, object])
def test_unpoolable_grad_output(kind, rank, dtype):
    x, v, i = _fwd_for_backward(rank)
    with _raises(TypeError, kind, rank, "grad_output"):
        _bwd(kind, rank, v.astype(dtype), i, x.shape)


@RANKS
@pytest.mark.parametrize("kind", BACKWARD)
@pytest.mark.parametrize("value", [1, None, "yes"], ids=repr)
def test_backward_bad_channels_last(kind, rank, value):
    x, v, i = _fwd_for_backward(rank)
    with _raises(TypeError, kind, rank, "channels_last"):
        _bwd(kind, rank, v, i, x.shape, channels_last=value)


@RANKS
@pytest.mark.parametrize("kind", BACKWARD)
@pytest.mark.parametrize("problem", ["shape", "dtype", "readonly", "list"])
def test_backward_bad_out(kind, rank, problem):
    x, v, i = _fwd_for_backward(rank)
    exc, msg = ValueError, "out must have"
    if problem == "shape":
        out = np.empty(x.shape[:-1] + (x.shape[-1] + 1,), np.float32)
    elif problem == "dtype":
        out = np.empty(x.shape, np.float64)
    elif problem == "readonly":
        out = np.empty(x.shape, np.float32)
        out.setflags(write=False)
        msg = "out is read-only"
    else:
        out, exc, msg = np.zeros(x.shape).tolist(), TypeError, "out must be a NumPy array"
    with _raises(exc, kind, rank, msg):
        _bwd(kind, rank, v, i, x.shape, out=out)


@RANKS
@LAYOUTS
@pytest.mark.parametrize("kind", BACKWARD)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("where", ["contiguous", "strided"])
def test_backward_out_is_returned_and_filled(kind, rank, channels_last, dtype, where):
    x, v, i = _fwd_for_backward(rank, channels_last, dtype)
    g = np.random.default_rng(2).standard_normal(v.shape).astype(dtype)
    want = _bwd(kind, rank, g, i, x.shape, channels_last=channels_last)
    assert want.dtype == np.dtype(dtype) and want.shape == x.shape
    if where == "contiguous":
        out, buf = np.full(x.shape, 9, dtype), None
    else:
        out, buf = _strided_out(x.shape, dtype, 9)
    before = None if buf is None else buf.copy()
    res = _bwd(kind, rank, g, i, x.shape, channels_last=channels_last, out=out)
    assert res is out
    np.testing.assert_array_equal(out, want, strict=True)
    if buf is not None:
        mask = np.ones(buf.shape, bool)
        mask[tuple(slice(1, None, 2) for _ in x.shape)] = False
        np.testing.assert_array_equal(buf[mask], before[mask])


@RANKS
def test_backward_accepts_list_input_shape_and_minus_one_indices(rank):
    x, v, i = _fwd_for_backward(rank)
    g = np.ones_like(v)
    a = _f("adaptive_avg_backward", rank)(g, list(x.shape))
    np.testing.assert_array_equal(a, _f("adaptive_avg_backward", rank)(g, x.shape))
    skip = i.copy()
    skip[0] = -1          # -1: "no input element", contributes nothing (as PyTorch)
    got = _f("adaptive_max_backward", rank)(g, skip, x.shape)
    full = _f("adaptive_max_backward", rank)(g, i, x.shape)
    assert np.all(got[0] == 0)
    np.testing.assert_array_equal(got[1:], full[1:])
    assert full[0].sum() == g[0].sum()


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n,exc,msg", [
    (0, ValueError, r"set_num_threads\(\).*n must be >= 1"),
    (-3, ValueError, r"set_num_threads\(\).*n must be >= 1"),
    ("2", TypeError, r"set_num_threads\(\).*n must be an integer"),
    (True, TypeError, r"set_num_threads\(\).*n must be an integer.*bool"),
    (2.0, TypeError, r"set_num_threads\(\).*n must be an integer"),
    (None, TypeError, r"set_num_threads\(\).*n must be an integer"),
])
def test_bad_set_num_threads(n, exc, msg):
    before = cypool.get_num_threads()
    with pytest.raises(exc, match=msg):
        cypool.set_num_threads(n)
    assert cypool.get_num_threads() == before
