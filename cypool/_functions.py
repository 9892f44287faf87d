"""The public pooling functions.

Each function is written once and instantiated for 1, 2 and 3 spatial
dimensions; it turns its arguments into a plan (``cypool._plan``), picks the
path by array type (``cypool._dispatch``) and hands the plan over.
"""
from __future__ import annotations

import math

import numpy as np

from . import _dispatch
from ._plan import (adaptive_plan, as_array, as_bool, check_input_shape, check_out,
                    fixed_plan, layout_name, split_shape)

_DIMS = {1: "L", 2: "H, W", 3: "D, H, W"}
_ODIMS = {1: "OL", 2: "OH, OW", 3: "OD, OH, OW"}

_LAYOUT_DOC = """\
channels_last : bool, default False
    If True, the channel axis is last: ``(N, {dims}, C)`` or ``({dims}, C)``.
    The result has the same layout."""

_POOLED_DOC = """\
{LAYOUT}
{OUT}

Returns
-------
ndarray
    ``(N, C, {odims})`` (or the unbatched / channels-last equivalent)."""

_GRADIENT_DOC = """\
{LAYOUT}
{OUT}

Returns
-------
ndarray
    Of shape ``input_shape`` and ``grad_output``'s dtype."""

_MAX_RESULT_DOC = """\
{LAYOUT}
out : ndarray or (ndarray, ndarray), optional
    Where to write the result (a ``(values, indices)`` pair with
    ``return_indices=True``); exactly the result's shape and dtype.

Returns
-------
ndarray, or (ndarray, ndarray) with ``return_indices=True``
    Values of ``x``'s dtype, and int64 indices of the same shape."""

_OUT_DOC = """\
out : ndarray, optional
    Array of exactly the result's shape and dtype to write the result into;
    it is returned."""

_EXAMPLES = {
    ("adaptive_avg", 1): """\
>>> x = np.array([[[1., 2., 3., 4., 5.]]], dtype=np.float32)
>>> cypool.adaptive_avg_pool1d(x, 3)
array([[[1.5, 3. , 4.5]]], dtype=float32)""",
    ("adaptive_avg", 2): """\
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> cypool.adaptive_avg_pool2d(x, 2)
array([[[[ 2.5,  4.5],
         [10.5, 12.5]]]], dtype=float32)
>>> cypool.adaptive_avg_pool2d(x, (1, None)).shape   # None keeps that size
(1, 1, 1, 4)""",
    ("adaptive_avg", 3): """\
>>> x = np.ones((2, 3, 4, 6, 8))
>>> cypool.adaptive_avg_pool3d(x, (1, 2, 3)).shape
(2, 3, 1, 2, 3)""",
    ("adaptive_max", 1): """\
>>> x = np.array([[3., 1., 2.]])
>>> cypool.adaptive_max_pool1d(x, 5, return_indices=True)
(array([[3., 3., 1., 2., 2.]]), array([[0, 0, 1, 2, 2]]))""",
    ("adaptive_max", 2): """\
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> values, indices = cypool.adaptive_max_pool2d(x, 2, return_indices=True)
>>> values
array([[[[ 5.,  7.],
         [13., 15.]]]], dtype=float32)
>>> indices
array([[[[ 5,  7],
         [13, 15]]]])""",
    ("adaptive_max", 3): """\
>>> x = np.arange(64.0).reshape(1, 4, 4, 4)
>>> cypool.adaptive_max_pool3d(x, 1)
array([[[[63.]]]])""",
    ("global_avg", 1): """\
>>> x = np.array([[[1., 2., 3.], [4., 5., 6.]]])
>>> cypool.global_avg_pool1d(x)
array([[[2.],
        [5.]]])
>>> cypool.global_avg_pool1d(x, keepdims=False)
array([[2., 5.]])""",
    ("global_avg", 2): """\
>>> x = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
>>> cypool.global_avg_pool2d(x, keepdims=False)
array([[1.5, 5.5]], dtype=float32)
>>> cypool.global_avg_pool2d(x.transpose(0, 2, 3, 1), channels_last=True).shape
(1, 1, 1, 2)""",
    ("global_avg", 3): """\
>>> cypool.global_avg_pool3d(np.ones((2, 3, 4, 5, 6)), keepdims=False).shape
(2, 3)""",
    ("global_max", 1): """\
>>> x = np.array([[4, 9, 2], [7, 1, 7]], dtype=np.uint8)
>>> cypool.global_max_pool1d(x, keepdims=False, return_indices=True)
(array([9, 7], dtype=uint8), array([1, 0]))""",
    ("global_max", 2): """\
>>> x = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
>>> cypool.global_max_pool2d(x, keepdims=False)
array([[3., 7.]], dtype=float32)""",
    ("global_max", 3): """\
>>> cypool.global_max_pool3d(np.zeros((3, 4, 5, 6)), keepdims=False).shape
(3,)""",
    ("adaptive_avg_backward", 1): """\
>>> g = np.ones((1, 1, 2))
>>> cypool.adaptive_avg_pool1d_backward(g, (1, 1, 3))   # bins [0, 2) and [1, 3)
array([[[0.5, 1. , 0.5]]])""",
    ("adaptive_avg_backward", 2): """\
>>> g = np.ones((1, 1, 2, 2), dtype=np.float32)
>>> cypool.adaptive_avg_pool2d_backward(g, (1, 1, 4, 4))[0, 0]
array([[0.25, 0.25, 0.25, 0.25],
       [0.25, 0.25, 0.25, 0.25],
       [0.25, 0.25, 0.25, 0.25],
       [0.25, 0.25, 0.25, 0.25]], dtype=float32)""",
    ("adaptive_avg_backward", 3): """\
>>> g = np.ones((2, 1, 1, 1))
>>> cypool.adaptive_avg_pool3d_backward(g, (2, 2, 2, 2))[0]
array([[[0.125, 0.125],
        [0.125, 0.125]],
<BLANKLINE>
       [[0.125, 0.125],
        [0.125, 0.125]]])""",
    ("adaptive_max_backward", 1): """\
>>> x = np.array([[1., 5., 2., 0.]])
>>> y, idx = cypool.adaptive_max_pool1d(x, 2, return_indices=True)
>>> cypool.adaptive_max_pool1d_backward(np.array([[10., 100.]]), idx, x.shape)
array([[ 0., 10., 100.,  0.]])""",
    ("adaptive_max_backward", 2): """\
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> y, idx = cypool.adaptive_max_pool2d(x, 2, return_indices=True)
>>> cypool.adaptive_max_pool2d_backward(np.ones_like(y), idx, x.shape)[0, 0]
array([[0., 0., 0., 0.],
       [0., 1., 0., 1.],
       [0., 0., 0., 0.],
       [0., 1., 0., 1.]], dtype=float32)""",
    ("adaptive_max_backward", 3): """\
>>> x = np.arange(8.0).reshape(1, 2, 2, 2)
>>> y, idx = cypool.adaptive_max_pool3d(x, 1, return_indices=True)
>>> cypool.adaptive_max_pool3d_backward(np.ones_like(y), idx, x.shape).reshape(-1)
array([0., 0., 0., 0., 0., 0., 0., 1.])""",
    ("avg", 1): """\
>>> x = np.array([[[1., 2., 3., 4., 5.]]])
>>> cypool.avg_pool1d(x, 3, stride=2, padding=1)
array([[[1., 3., 3.]]])
>>> cypool.avg_pool1d(x, 3, stride=2, padding=1, count_include_pad=False)
array([[[1.5, 3. , 4.5]]])
>>> cypool.avg_pool1d(x, 2, stride=1, padding="same")   # TensorFlow's rule, pad after
array([[[1.5, 2.5, 3.5, 4.5, 2.5]]])""",
    ("avg", 2): """\
>>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
>>> cypool.avg_pool2d(x, 2)
array([[[[ 2.5,  4.5],
         [10.5, 12.5]]]], dtype=float32)
>>> cypool.avg_pool2d(x, 3, stride=1, padding=((0, 1), (1, 1))).shape   # asymmetric
(1, 1, 3, 4)""",
    ("avg", 3): """\
>>> x = np.ones((2, 3, 8, 8, 8), dtype=np.float32)
>>> cypool.avg_pool3d(x, 2).shape
(2, 3, 4, 4, 4)""",
    ("max", 1): """\
>>> x = np.array([[2., 2., 1., 2., np.nan, 0.]])
>>> cypool.max_pool1d(x, 2, return_indices=True)       # ties: first; NaN wins
(array([[ 2.,  2., nan]]), array([[0, 3, 4]]))""",
    ("max", 2): """\
>>> img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)   # integers run natively
>>> cypool.max_pool2d(img, 2)
array([[[ 5,  7],
        [13, 15]]], dtype=uint8)
>>> x = np.random.default_rng(0).random((1, 64, 112, 112), dtype=np.float32)
>>> cypool.max_pool2d(x, 3, stride=2, padding=1).shape    # the ResNet stem
(1, 64, 56, 56)""",
    ("max", 3): """\
>>> x = np.zeros((1, 2, 5, 6, 7), dtype=np.float32)
>>> cypool.max_pool3d(x, 2, ceil_mode=True).shape
(1, 2, 3, 3, 4)""",
    ("avg_backward", 1): """\
>>> cypool.avg_pool1d_backward(np.ones((1, 1, 3)), (1, 1, 5), 3, stride=2, padding=1)
array([[[0.33333333, 0.66666667, 0.33333333, 0.66666667, 0.33333333]]])""",
    ("avg_backward", 2): """\
>>> g = np.ones((1, 1, 2, 2), dtype=np.float32)
>>> cypool.avg_pool2d_backward(g, (1, 1, 4, 4), 2)[0, 0]
array([[0.25, 0.25, 0.25, 0.25],
       [0.25, 0.25, 0.25, 0.25],
       [0.25, 0.25, 0.25, 0.25],
       [0.25, 0.25, 0.25, 0.25]], dtype=float32)""",
    ("avg_backward", 3): """\
>>> cypool.avg_pool3d_backward(np.ones((1, 1, 1, 1)), (1, 2, 2, 2), 2).reshape(-1)
array([0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125])""",
    ("max_backward", 1): """\
>>> x = np.array([[1., 5., 2., 0.]])
>>> y, idx = cypool.max_pool1d(x, 3, stride=1, return_indices=True)
>>> cypool.max_pool1d_backward(np.array([[10., 100.]]), idx, x.shape, 3, stride=1)
array([[  0., 110.,   0.,   0.]])""",
    ("max_backward", 2): """\
>>> x = np.array([[[[1., 5., 2.], [0., 3., 4.], [6., 1., 0.]]]], dtype=np.float32)
>>> y, idx = cypool.max_pool2d(x, 2, stride=1, return_indices=True)
>>> y[0, 0]                        # overlapping windows: 5 wins twice
array([[5., 5.],
       [6., 4.]], dtype=float32)
>>> cypool.max_pool2d_backward(np.ones_like(y), idx, x.shape, 2, stride=1)[0, 0]
array([[0., 2., 0.],
       [0., 0., 1.],
       [1., 0., 0.]], dtype=float32)""",
    ("max_backward", 3): """\
>>> x = np.arange(8.0).reshape(1, 2, 2, 2)
>>> y, idx = cypool.max_pool3d(x, 2, return_indices=True)
>>> cypool.max_pool3d_backward(np.ones_like(y), idx, x.shape, 2).reshape(-1)
array([0., 0., 0., 0., 0., 0., 0., 1.])""",
}


def _doc(key: str, rank: int, text: str) -> str:
    dims = _DIMS[rank]
    text = text.replace("FIXEDARGS", _FIXED_ARGS_DOC).replace("POOLED", _POOLED_DOC)
    text = text.replace("GRADIENT", _GRADIENT_DOC).replace("MAXRESULT", _MAX_RESULT_DOC)
    text = text.replace("{LAYOUT}", _LAYOUT_DOC.format(dims=dims)).replace("{OUT}", _OUT_DOC)
    text = text.format(rank=rank, dims=dims, odims=_ODIMS[rank])
    return text + "\n\nExamples\n--------\n>>> import numpy as np, cypool\n" + _EXAMPLES[(key, rank)] + "\n"


def _finish(fn, name: str, key: str, rank: int, doc: str):
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = "cypool"
    fn.__doc__ = _doc(key, rank, doc)
    return fn


def _out_pair(out, fn):
    """Split ``out=`` of a return_indices call into (values, indices)."""
    if out is None:
        return None, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"{fn}(): with return_indices=True, out must be a (values, indices) "
                        f"pair of arrays, got {type(out).__name__}")
    return out[0], out[1]


# ---------------------------------------------------------------------------
# Repeated calls
# ---------------------------------------------------------------------------
# A call repeated with arrays of the same shapes and dtypes and the same
# arguments skips the argument layer: the first one is validated in full and
# leaves a replay of its plan in _REPLAY, under a key of everything that
# validation looked at (argument values with their exact types, so 1, True
# and 1.0 stay apart).  Calls with out=, arguments of other kinds (lists,
# NumPy scalars, padding pairs) or non-NumPy arrays always take the full path.

_REPLAY: dict = {}
_REPLAY_MAX = 4096
# _replay_key(name, a, b, args): the key, or None (compiled, for speed)
from ._kernels import replay_key as _replay_key  # noqa: E402


def _remember(key, run):
    if len(_REPLAY) >= _REPLAY_MAX:
        _REPLAY.clear()
    _REPLAY[key] = run
    return run


def _forward_replay(impl, plan, return_indices, result_shape):
    forward = impl.forward
    if result_shape == plan.out_shape:
        return lambda x: forward(plan, x, return_indices=return_indices)
    if return_indices:
        def run(x):
            v, i = forward(plan, x, return_indices=True)
            return v.reshape(result_shape), i.reshape(result_shape)
        return run
    return lambda x: forward(plan, x).reshape(result_shape)


def _run_forward(fn, op, rank, x, output_size, channels_last, out, return_indices,
                 keep_shape=None, make_plan=None, key=None):
    """Shared body of every forward function: plan (adaptive unless
    ``make_plan(shape, dtype)`` is given), check ``out``, run, reshape.
    With a replay ``key`` (no ``out``), the call is remembered for replay."""
    impl = _dispatch.implementation(fn, x)
    if impl.__name__.endswith("_cpu"):
        x = as_array(x, fn, "x")
    else:
        x = impl.as_device_array(x)
    if make_plan is None:
        plan = adaptive_plan(fn, op, rank, x.shape, x.dtype, output_size, channels_last)
    else:
        plan = make_plan(x.shape, x.dtype)
    result_shape = plan.out_shape if keep_shape is None else keep_shape(plan)
    if return_indices:
        out_v, out_i = _out_pair(out, fn)
    else:
        out_v, out_i = out, None
    kind = _out_kind(impl)
    if out_v is not None:
        check_out(out_v, result_shape, plan.out_dtype, fn, kind=kind)
    if out_i is not None:
        check_out(out_i, result_shape, np.dtype(np.int64), fn, "out[1]", kind=kind)
    if key is not None and out is None:
        return _remember(key, _forward_replay(impl, plan, return_indices, result_shape))(x)
    views = [_as_shape(o, plan.out_shape) for o in (out_v, out_i)]
    res = impl.forward(plan, x, return_indices=return_indices, out=views[0],
                       out_indices=views[1])
    if keep_shape is None:
        return res
    parts = res if return_indices else (res,)
    done = []
    for r, o, v in zip(parts, (out_v, out_i), views):
        if o is None:
            done.append(r.reshape(result_shape))
        else:
            if v is None:
                o[...] = r.reshape(result_shape)
            done.append(o)
    return tuple(done) if return_indices else done[0]


def _out_kind(impl) -> tuple:
    """(array type, name) that ``out=`` must be for a call taking ``impl``."""
    if impl.__name__.endswith("_cpu"):
        return np.ndarray, "NumPy"
    return impl.out_kind()


def _as_shape(out, shape):
    """A view of ``out`` with the kernels' result ``shape`` (they differ only
    by unit axes), or None when there is no out or no such view."""
    if out is None or out.shape == tuple(shape):
        return out
    v = out.view()
    try:
        v.shape = shape
    except AttributeError:
        return None
    return v


# ---------------------------------------------------------------------------
# Adaptive pooling
# ---------------------------------------------------------------------------

def _adaptive_avg(rank):
    name = f"adaptive_avg_pool{rank}d"

    def f(x, output_size, *, channels_last=False, out=None):
        key = None if out is not None else _replay_key(name, x, None,
                                                       (output_size, channels_last))
        run = _REPLAY.get(key)
        if run is not None:
            return run(x)
        return _run_forward(name, "avg", rank, x, output_size, channels_last, out, False,
                            key=key)

    return _finish(f, name, "adaptive_avg", rank, """\
Adaptive average pooling over {rank} spatial dimension(s), as PyTorch's
``adaptive_avg_pool{rank}d``.

Output position ``i`` of ``O`` along an input extent ``I`` averages the bin
``[floor(i*I/O), ceil((i+1)*I/O))``; bins may overlap and ``O > I`` is
allowed.  The window is summed in row-major order in the compute dtype and
divided by each bin extent in turn, as PyTorch's CPU kernel does.

Parameters
----------
x : array_like
    ``(N, C, {dims})`` or ``(C, {dims})``; float16/32/64 (float16 is
    accumulated in float32), integers and bool (returned as float64).
output_size : int, None or tuple of {rank} ints/None
    Output extent per spatial dimension; ``None`` keeps the input's extent.
POOLED""")


def _adaptive_max(rank):
    name = f"adaptive_max_pool{rank}d"

    def f(x, output_size, return_indices=False, *, channels_last=False, out=None):
        key = None if out is not None else _replay_key(
            name, x, None, (output_size, return_indices, channels_last))
        run = _REPLAY.get(key)
        if run is not None:
            return run(x)
        ri = as_bool(return_indices, name, "return_indices")
        return _run_forward(name, "max", rank, x, output_size, channels_last, out, ri,
                            key=key)

    return _finish(f, name, "adaptive_max", rank, """\
Adaptive max pooling over {rank} spatial dimension(s), as PyTorch's
``adaptive_max_pool{rank}d``.

Bins as in :func:`adaptive_avg_pool{rank}d`.  A NaN in a bin wins (the
index of the last NaN in scan order is returned); among equal values the
first in scan order wins.

Parameters
----------
x : array_like
    ``(N, C, {dims})`` or ``(C, {dims})``: any float, integer or bool dtype.
output_size : int, None or tuple of {rank} ints/None
    Output extent per spatial dimension; ``None`` keeps the input's extent.
return_indices : bool, default False
    Also return the int64 flat index of each maximum within its input plane
    (``h*W + w`` in 2-d), as PyTorch does.
MAXRESULT""")


# ---------------------------------------------------------------------------
# Global pooling
# ---------------------------------------------------------------------------

def _squeezed(plan):
    return (plan.n, plan.c) if plan.batched else (plan.c,)


def _global(rank, op):
    name = f"global_{op}_pool{rank}d"

    if op == "avg":
        def f(x, *, keepdims=True, channels_last=False, out=None):
            key = None if out is not None else _replay_key(name, x, None,
                                                           (keepdims, channels_last))
            run = _REPLAY.get(key)
            if run is not None:
                return run(x)
            keep = None if as_bool(keepdims, name, "keepdims") else _squeezed
            return _run_forward(name, "avg", rank, x, 1, channels_last, out, False, keep,
                                key=key)
    else:
        def f(x, *, keepdims=True, return_indices=False, channels_last=False, out=None):
            key = None if out is not None else _replay_key(
                name, x, None, (keepdims, return_indices, channels_last))
            run = _REPLAY.get(key)
            if run is not None:
                return run(x)
            keep = None if as_bool(keepdims, name, "keepdims") else _squeezed
            ri = as_bool(return_indices, name, "return_indices")
            return _run_forward(name, "max", rank, x, 1, channels_last, out, ri, keep,
                                key=key)

    what = "mean" if op == "avg" else "maximum"
    extra = "" if op == "avg" else """
return_indices : bool, default False
    Also return the int64 flat index of each maximum within its plane."""
    return _finish(f, name, f"global_{op}", rank, f"""\
Global {op} pooling: the {what} over all {{rank}} spatial dimension(s).

The same as ``adaptive_{op}_pool{{rank}}d(x, 1)`` (NaN handling and indices
included), with the spatial axes optionally dropped.

Parameters
----------
x : array_like
    ``(N, C, {{dims}})`` or ``(C, {{dims}})``.
keepdims : bool, default True
    Keep the spatial axes as size 1 (``(N, C, 1, ...)``); if False the
    result is ``(N, C)`` or ``(C,)``.{extra}
{{LAYOUT}}
{{OUT}}

Returns
-------
ndarray{"" if op == "avg" else ", or (ndarray, ndarray) with return_indices=True"}""")


# ---------------------------------------------------------------------------
# Backward
# ---------------------------------------------------------------------------

def _backward_plan(fn, op, rank, grad_output, input_shape, channels_last, make_plan=None):
    """Plan of the forward call a gradient belongs to (adaptive, with the output
    size read off ``grad_output``, unless ``make_plan(shape)`` is given)."""
    channels_last = as_bool(channels_last, fn, "channels_last")
    shape = check_input_shape(input_shape, rank, channels_last, fn)
    _, _, _, ospatial = split_shape(grad_output.shape, rank, channels_last, fn, "grad_output")
    if make_plan is None:
        plan = adaptive_plan(fn, op, rank, shape, grad_output.dtype, ospatial, channels_last,
                             arg="input_shape", grad=True)
    else:
        plan = make_plan(shape)
    if plan.out_shape != tuple(grad_output.shape):
        raise ValueError(f"{fn}(): grad_output has shape {tuple(grad_output.shape)}, which is "
                         f"not the output shape of the forward call on input_shape {shape} "
                         f"(that is {plan.out_shape}, {layout_name(rank, channels_last)})")
    return plan


def _backward_replay(fn, impl, op, plan, fused):
    if op == "avg":
        if impl.__name__.endswith("_cpu"):
            return impl.avg_backward_replay(plan)
        avg = impl.avg_backward
        return lambda g: avg(plan, g)
    mb = impl.max_backward
    if not fused:
        def run(g, indices):
            _check_index_range(fn, indices, plan)
            return mb(plan, g, indices)
        return run

    def run(g, indices):
        # the CPU kernels check the range of int64 indices as they go (a pass
        # over them saved); a bad index is reported by the full check
        try:
            return mb(plan, g, indices)
        except impl.BadIndices:
            _check_index_range(fn, indices, plan)
            raise AssertionError("cypool: a kernel refused indices that the range check "
                                 "accepts") from None
    return run


def _run_backward(fn, op, rank, grad_output, indices, input_shape, channels_last, out,
                  make_plan=None, key=None):
    """Shared body of every backward function: dispatch, plan (adaptive unless
    ``make_plan(shape, dtype)`` is given), check indices and ``out``, run.
    With a replay ``key`` (no ``out``), the call is remembered for replay."""
    impl = _dispatch.implementation(fn, grad_output, indices)
    if impl.__name__.endswith("_cpu"):
        grad_output = as_array(grad_output, fn, "grad_output")
        if indices is not None:
            indices = as_array(indices, fn, "indices")
    else:
        grad_output = impl.as_device_array(grad_output)
        if indices is not None:
            indices = impl.as_device_array(indices)
    mk = None if make_plan is None else (lambda shape: make_plan(shape, grad_output.dtype))
    plan = _backward_plan(fn, op, rank, grad_output, input_shape, channels_last, mk)
    if op == "max":
        _check_indices(fn, indices, grad_output, plan)
    if out is not None:
        check_out(out, plan.in_shape, plan.out_dtype, fn, kind=_out_kind(impl))
        if op == "avg":
            return impl.avg_backward(plan, grad_output, out=out)
        # checked first, so that a bad call leaves ``out`` untouched
        _check_index_range(fn, indices, plan)
        return impl.max_backward(plan, grad_output, indices, out=out)
    fused = op == "max" and impl.__name__.endswith("_cpu") and indices.dtype == np.int64
    run = _backward_replay(fn, impl, op, plan, fused)
    if key is not None:
        _remember(key, run)
    return run(grad_output) if op == "avg" else run(grad_output, indices)


def _adaptive_avg_backward(rank):
    name = f"adaptive_avg_pool{rank}d_backward"

    def f(grad_output, input_shape, *, channels_last=False, out=None):
        key = None if out is not None else _replay_key(name, grad_output, None,
                                                       (input_shape, channels_last))
        run = _REPLAY.get(key)
        if run is not None:
            return run(grad_output)
        return _run_backward(name, "avg", rank, grad_output, None, input_shape,
                             channels_last, out, key=key)

    return _finish(f, name, "adaptive_avg_backward", rank, """\
Gradient of :func:`adaptive_avg_pool{rank}d` with respect to its input.

Each input element sums ``grad_output / bin extents`` over the bins that
contain it, in output order, so the result is bit-identical to PyTorch's
CPU autograd and the same at any thread count.

Parameters
----------
grad_output : array_like
    Gradient of the pooled result, ``(N, C, {odims})`` (float16/32/64).
input_shape : tuple of ints
    Shape of the forward call's input, in its layout.
GRADIENT""")


def _check_indices(fn, indices, grad_output, plan):
    if indices.shape != grad_output.shape:
        raise ValueError(f"{fn}(): indices must have grad_output's shape "
                         f"{tuple(grad_output.shape)}, got {tuple(indices.shape)}")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{fn}(): indices must be an integer array (the forward call's "
                        f"int64 indices), got dtype {indices.dtype}")


def _check_index_range(fn, indices, plan):
    plane = math.prod(plan.in_spatial)
    if indices.size:
        if (isinstance(indices, np.ndarray) and indices.dtype == np.int64
                and indices.flags.c_contiguous):
            from . import _cpu, _kernels
            lo, hi = _kernels.index_range(indices.reshape(-1), _cpu.num_threads(indices.size))
        else:
            lo, hi = int(indices.min()), int(indices.max())
        if lo < -1 or hi >= plane:
            raise ValueError(f"{fn}(): indices must lie in [0, {plane}) (flat positions in an "
                             f"input plane of {plan.in_spatial}; -1 for a window with no "
                             f"input), got values in [{lo}, {hi}]")


def _adaptive_max_backward(rank):
    name = f"adaptive_max_pool{rank}d_backward"

    def f(grad_output, indices, input_shape, *, channels_last=False, out=None):
        key = None if out is not None else _replay_key(name, grad_output, indices,
                                                       (input_shape, channels_last))
        run = _REPLAY.get(key)
        if run is not None:
            return run(grad_output, indices)
        return _run_backward(name, "max", rank, grad_output, indices, input_shape,
                             channels_last, out, key=key)

    return _finish(f, name, "adaptive_max_backward", rank, """\
Gradient of :func:`adaptive_max_pool{rank}d` with respect to its input.

``grad_output`` is added at the positions ``indices`` name, in output
order (overlapping bins that chose the same element add up), as PyTorch's
CPU autograd does: bit-identical to it and the same at any thread count.

Parameters
----------
grad_output : array_like
    Gradient of the pooled values, ``(N, C, {odims})`` (float16/32/64).
indices : array_like of int
    The forward call's indices (``return_indices=True``), unchanged.
input_shape : tuple of ints
    Shape of the forward call's input, in its layout.
GRADIENT""")


# ---------------------------------------------------------------------------
# Fixed-window pooling
# ---------------------------------------------------------------------------

_FIXED_ARGS_DOC = """\
kernel_size : int or tuple of {rank} ints
    Window extent per spatial dimension.
stride : int, tuple of {rank} ints or None
    Window step; None (the default) means ``kernel_size``.
padding : int, tuple of {rank} ints, tuple of {rank} (before, after) pairs, "valid" or "same"
    Implicit padding.  An int or tuple pads both sides (at most half the
    kernel, as PyTorch).  Beyond PyTorch: ``(before, after)`` pairs as
    ``np.pad`` takes them (each at most ``dilation*(kernel_size-1)``, as in
    ONNX, JAX and TensorFlow models), ``"valid"`` (no padding) and
    ``"same"`` (TensorFlow's rule: output ``ceil(size/stride)``, the odd
    extra pad after).  Padded positions never win a max and count as zeros
    in an average when ``count_include_pad``.
dilation : int or tuple of {rank} ints
    Spacing between window taps.
ceil_mode : bool
    Round the output size up (PyTorch's rule: a last window that would
    start in the right padding is dropped)."""


def _fixed_plan_maker(name, op, rank, kernel_size, stride, padding, dilation, ceil_mode,
                      count_include_pad, divisor_override, channels_last, grad=False,
                      arg="x"):
    """``make(shape, dtype)`` -> the plan of this fixed-window call on such an array."""
    return lambda shape, dtype: fixed_plan(
        name, op, rank, shape, dtype, kernel_size, stride, padding, dilation, ceil_mode,
        count_include_pad, divisor_override, channels_last, arg=arg, grad=grad)


def _avg_pool(rank):
    name = f"avg_pool{rank}d"

    def f(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
          divisor_override=None, *, dilation=1, channels_last=False, out=None):
        key = None if out is not None else _replay_key(
            name, x, None, (kernel_size, stride, padding, ceil_mode, count_include_pad,
                            divisor_override, dilation, channels_last))
        run = _REPLAY.get(key)
        if run is not None:
            return run(x)
        mk = _fixed_plan_maker(name, "avg", rank, kernel_size, stride, padding, dilation,
                               ceil_mode, count_include_pad, divisor_override, channels_last)
        return _run_forward(name, "avg", rank, x, None, channels_last, out, False,
                            make_plan=mk, key=key)

    return _finish(f, name, "avg", rank, """\
Average pooling with a fixed window over {rank} spatial dimension(s), as
PyTorch's ``avg_pool{rank}d``, plus asymmetric and "same"/"valid" padding
and dilation.

Each window is summed in row-major order (float16 in float32) and divided
once by its divisor: ``divisor_override`` if given, else the number of taps
inside input-plus-padding (``count_include_pad=True``; the ``ceil_mode``
overhang never counts) or inside the input only (``False``).  A dilated
window with no tap in the input averages to 0.

Parameters
----------
x : array_like
    ``(N, C, {dims})`` or ``(C, {dims})``; float16/32/64, integers and
    bool (returned as float64).
FIXEDARGS
count_include_pad : bool, default True
    Count padded taps in the divisor.
divisor_override : int, optional
    Divide every window sum by this (non-zero) number instead.
POOLED""")


def _max_pool(rank):
    name = f"max_pool{rank}d"

    def f(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
          return_indices=False, *, channels_last=False, out=None):
        key = None if out is not None else _replay_key(
            name, x, None, (kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                            channels_last))
        run = _REPLAY.get(key)
        if run is not None:
            return run(x)
        ri = as_bool(return_indices, name, "return_indices")
        mk = _fixed_plan_maker(name, "max", rank, kernel_size, stride, padding, dilation,
                               ceil_mode, True, None, channels_last)
        return _run_forward(name, "max", rank, x, None, channels_last, out, ri, make_plan=mk,
                            key=key)

    return _finish(f, name, "max", rank, """\
Max pooling with a fixed window over {rank} spatial dimension(s), as
PyTorch's ``max_pool{rank}d``, plus asymmetric and "same"/"valid" padding.

A NaN in a window wins (the index of the last NaN in scan order); among
equal values the first in scan order wins; padding never wins.  Where
PyTorch goes wrong, cypool does not: a dilated window with no tap in the
input gives the dtype's lowest value (-inf for floats) and index -1
(PyTorch returns an index outside the plane, and its backward then writes
out of bounds); the backward functions skip index -1.

Parameters
----------
x : array_like
    ``(N, C, {dims})`` or ``(C, {dims})``: any float, integer or bool dtype.
FIXEDARGS
return_indices : bool, default False
    Also return the int64 flat index of each maximum within its input plane.
MAXRESULT""")


def _avg_pool_backward(rank):
    name = f"avg_pool{rank}d_backward"

    def f(grad_output, input_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
          count_include_pad=True, divisor_override=None, *, dilation=1, channels_last=False,
          out=None):
        key = None if out is not None else _replay_key(
            name, grad_output, None, (input_shape, kernel_size, stride, padding, ceil_mode,
                                      count_include_pad, divisor_override, dilation,
                                      channels_last))
        run = _REPLAY.get(key)
        if run is not None:
            return run(grad_output)
        mk = _fixed_plan_maker(name, "avg", rank, kernel_size, stride, padding, dilation,
                               ceil_mode, count_include_pad, divisor_override, channels_last,
                               grad=True, arg="input_shape")
        return _run_backward(name, "avg", rank, grad_output, None, input_shape,
                             channels_last, out, mk, key=key)

    return _finish(f, name, "avg_backward", rank, """\
Gradient of :func:`avg_pool{rank}d` with respect to its input.

Takes the forward call's arguments.  Each input element sums
``grad_output / divisor`` over the windows that read it, in output order:
PyTorch's result bit for bit, the same at any thread count.

Parameters
----------
grad_output : array_like
    Gradient of the pooled result (float16/32/64).
input_shape : tuple of ints
    Shape of the forward call's input, in its layout.
FIXEDARGS
count_include_pad, divisor_override, dilation
    As in the forward call.
GRADIENT""")


def _max_pool_backward(rank):
    name = f"max_pool{rank}d_backward"

    def f(grad_output, indices, input_shape, kernel_size, stride=None, padding=0, dilation=1,
          ceil_mode=False, *, channels_last=False, out=None):
        key = None if out is not None else _replay_key(
            name, grad_output, indices, (input_shape, kernel_size, stride, padding, dilation,
                                         ceil_mode, channels_last))
        run = _REPLAY.get(key)
        if run is not None:
            return run(grad_output, indices)
        mk = _fixed_plan_maker(name, "max", rank, kernel_size, stride, padding, dilation,
                               ceil_mode, True, None, channels_last, grad=True,
                               arg="input_shape")
        return _run_backward(name, "max", rank, grad_output, indices, input_shape,
                             channels_last, out, mk, key=key)

    return _finish(f, name, "max_backward", rank, """\
Gradient of :func:`max_pool{rank}d` with respect to its input.

``grad_output`` is added at the positions ``indices`` name, in output
order (overlapping windows that chose the same element add up); index -1
(a window with no input) adds nothing.  PyTorch's result bit for bit.

Parameters
----------
grad_output : array_like
    Gradient of the pooled values (float16/32/64).
indices : array_like of int
    The forward call's indices (``return_indices=True``), unchanged.
input_shape : tuple of ints
    Shape of the forward call's input, in its layout.
FIXEDARGS
GRADIENT""")


def _build():
    table = {}
    for rank in (1, 2, 3):
        for make in (_adaptive_avg, _adaptive_max, _adaptive_avg_backward,
                     _adaptive_max_backward, _avg_pool, _max_pool, _avg_pool_backward,
                     _max_pool_backward):
            f = make(rank)
            table[f.__name__] = f
        for op in ("avg", "max"):
            f = _global(rank, op)
            table[f.__name__] = f
    return table


FUNCTIONS = _build()
