"""The CPU path: runs a validated :class:`~cypool._plan.Plan` on NumPy arrays.

Inputs are brought to C-contiguous arrays of the plan's compute dtype (a
copy only when needed; the caller's array is never written), results are
computed by the OpenMP kernels of ``cypool._kernels`` and, when the caller
passed ``out=``, written there.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from . import _buffers
from . import _kernels as K
from ._plan import Plan, Window

_UNIT = Window("adaptive", 1, 1)


@lru_cache(maxsize=512)
def _table(w: Window) -> np.ndarray:
    if w.kind == "adaptive":
        t = K.adaptive_table(w.size, w.osize)
    else:
        t = K.fixed_table(w.size, w.osize, w.kernel, w.stride, w.pad_before,
                          w.pad_after, w.dilation, w.count_include_pad)
    t = np.ascontiguousarray(t)
    t.flags.writeable = False
    return t


@lru_cache(maxsize=512)
def _inverse(w: Window) -> tuple:
    ptr, outs = K.inverse_table(_table(w), w.step, w.size)
    ptr.flags.writeable = False
    outs.flags.writeable = False
    return ptr, outs


@lru_cache(maxsize=512)
def _runs(w: Window) -> np.ndarray:
    runs = K.runs_table(*_inverse(w))
    runs.flags.writeable = False
    return runs


def _windows3(plan: Plan) -> tuple:
    return (_UNIT,) * (3 - plan.rank) + tuple(plan.windows)


# Below this many elements touched, a call runs on one thread: waking a
# thread team costs more than the work (the result is the same either way).
SERIAL_WORK = 1 << 15


# Outputs at least this large are written with non-temporal stores where a
# kernel supports them (larger than the caches: nobody reads them back soon).
STREAM_BYTES = 8 << 20
# the channels-last max backward written densely streams gradients this
# large: on AMD's cores 16 MiB (Zen 5: 1.3x faster for 64 MB; 12.8 MB, which
# its 32 MB L3 cache holds, were up to 1.4x slower at 2 threads), elsewhere
# from STREAM_BYTES (Emerald Rapids: the batch-1 (1, 224, 224, 64) k=3 s=2
# backward's 12.8 MB streamed in 0.81x the time at 1 thread, 0.87x at 2)
DENSE_STREAM_BYTES = 16 << 20 if K.amd_cores() else STREAM_BYTES
# channels-last max backward bands: at most about this much input gradient
# each, so that a band stays in the L2 cache from its zeroing to its adds
BAND_BYTES = 1 << 20
# ... and gradients this large are summed band by band in a per-thread
# buffer, then streamed out (no line of them read first)
BAND_STREAM_BYTES = STREAM_BYTES


def num_threads(work: int = SERIAL_WORK) -> int:
    return 1 if work < SERIAL_WORK else K.max_threads()


def _channel_block(c: int, items: int, threads: int) -> int:
    """Channels per work item: all of them unless there are too few items
    to keep every thread busy (batch 1, global pooling), then blocks of a
    multiple of 16 lanes.  Any blocking gives bit-identical results."""
    if c <= 16 or items >= 4 * threads:
        return max(c, 1)
    want = -(-4 * threads // max(items, 1))
    block = -(-c // want)
    return max(16, -(-block // 16) * 16)


_CTYPE = {"float32": "float", "float64": "double", "int8": "int8_t", "uint8": "uint8_t",
          "int16": "int16_t", "uint16": "uint16_t", "int32": "int32_t", "uint32": "uint32_t",
          "int64": "int64_t", "uint64": "uint64_t"}


@lru_cache(maxsize=64)
def _kernel(name: str, dtype: np.dtype):
    """The kernel's specialisation for ``dtype``: calling it directly skips
    Cython's run-time signature matching, most of a small call's cost."""
    return getattr(K, name)[_CTYPE[dtype.name]]


def _lowest(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _flat_input(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if x.dtype is dtype and x.flags.c_contiguous:       # the common case, fast
        return x.reshape(-1)
    if x.dtype == np.bool_ and dtype == np.uint8:
        x = x.view(np.uint8)
    return np.ascontiguousarray(x, dtype=dtype).reshape(-1)


def _target(out, shape, dtype, *inputs):
    """The array the kernel writes: ``out`` itself when it can take the
    kernel's output directly, else a fresh contiguous array (a cached
    buffer when it is large, see cypool._buffers)."""
    if out is None:
        return _buffers.empty(shape, dtype)
    if (out.dtype == dtype and out.flags.c_contiguous
            and not any(np.may_share_memory(out, a) for a in inputs)):
        return out
    return _buffers.empty(shape, dtype)


def _deliver(result: np.ndarray, out, dtype: np.dtype) -> np.ndarray:
    if out is not None:
        if result is not out:
            np.copyto(out, result, casting="unsafe")
        return out
    return result if result.dtype == dtype else result.astype(dtype)


_NO_INDICES = np.empty(1, np.int64)


@lru_cache(maxsize=512)
def _geometry(plan: Plan, backward: bool = False) -> K.Geometry:
    """The kernels' geometry for ``plan``; with ``backward`` also the
    inverse and run tables the average backward walks (memoised: plans are
    cached and hash by identity)."""
    w3 = _windows3(plan)
    inverse = runs = None
    if backward:
        inverse = tuple(a for w in w3 for a in _inverse(w))
        runs = (_runs(w3[0]), _runs(w3[1]))
    wh, ww = w3[1], w3[2]
    unit = ((ww.kernel, ww.pad_before, ww.dilation)
            if ww.kind == "fixed" and ww.stride == 1 else None)
    fixed_h = ((wh.kernel, wh.pad_before, wh.stride)
               if wh.kind == "fixed" and wh.dilation == 1 else None)
    return K.Geometry(plan.kshape, plan.koshape, tuple(w.step for w in w3), plan.div_mode,
                      plan.div_value, tuple(_table(w) for w in w3), inverse, runs, unit,
                      fixed_h)


@lru_cache(maxsize=1024)
def _launch(plan: Plan, kind: str, threads: int) -> tuple:
    """(kernel, geometry, channel block, threads to use) of one kind of call
    ("forward" or "avg_backward") of ``plan`` with ``threads`` available."""
    koshape, kshape = plan.koshape, plan.kshape
    c = kshape[4]
    if kind == "forward":
        items = koshape[0] * koshape[1] * koshape[2]
        geo = _geometry(plan)
    else:
        geo = _geometry(plan, True)
        runs = _runs(_windows3(plan)[0]), _runs(_windows3(plan)[1])
        items = kshape[0] * (len(runs[0]) - 1) * (len(runs[1]) - 1)
    cblock = _channel_block(c, items, threads)
    return (_kernel(kind, plan.compute_dtype), geo, cblock,
            min(threads, max(1, items * -(-c // cblock))))


def forward(plan: Plan, x: np.ndarray, *, return_indices: bool = False,
            out=None, out_indices=None):
    """Pool ``x`` as ``plan`` says; returns values, or (values, indices)."""
    comp = plan.compute_dtype
    xk = _flat_input(x, comp)
    y = _target(out, plan.out_shape, comp, x)
    is_max = plan.op == "max"
    yi = None
    if is_max and return_indices:
        yi = _target(out_indices, plan.out_shape, np.dtype(np.int64), x)
    if y.size:
        kernel, geo, cblock, threads = _launch(plan, "forward", num_threads(xk.size + y.size))
        idx = yi if yi is not None else _NO_INDICES
        kernel(xk, y.reshape(-1), idx.reshape(-1), geo, is_max,
               _lowest(comp) if is_max else 0, cblock, threads, yi is not None,
               y.nbytes + (yi.nbytes if yi is not None else 0) >= STREAM_BYTES)
    values = _deliver(y, out, plan.out_dtype)
    if yi is None:
        return values
    return values, _deliver(yi, out_indices, np.dtype(np.int64))


def avg_backward(plan: Plan, grad_output: np.ndarray, *, out=None) -> np.ndarray:
    """Gradient of the average pool ``plan`` with respect to its input."""
    comp = plan.compute_dtype
    gk = _flat_input(grad_output, comp)
    gi = _target(out, plan.in_shape, comp, grad_output)
    if gi.size:
        kernel, geo, cblock, threads = _launch(plan, "avg_backward",
                                               num_threads(gk.size + gi.size))
        if gk.size == 0:
            gk = np.zeros(1, dtype=comp)
        # a large scratch comes from the buffer cache (pages already mapped)
        scratch = _buffers.empty((gk.size,), comp) if gk.nbytes >= _buffers.MIN_BYTES else None
        kernel(gk, gi.reshape(-1), geo, cblock, threads, gi.nbytes >= STREAM_BYTES, scratch)
    return _deliver(gi, out, plan.out_dtype)


def avg_backward_replay(plan: Plan):
    """``avg_backward`` for repeated calls of ``plan``: when the gradient is
    small (no cached buffers, no streaming) a leaner call of the same
    kernel, the per-call work that does not depend on the array done once."""
    comp = plan.compute_dtype
    size = math.prod(plan.in_shape)
    if (plan.out_dtype != comp or size == 0 or math.prod(plan.out_shape) == 0
            or size * comp.itemsize >= min(_buffers.MIN_BYTES, STREAM_BYTES)):
        return lambda g: avg_backward(plan, g)
    kernel = _kernel("avg_backward", comp)
    geo = _geometry(plan, True)
    in_shape, work = plan.in_shape, size + math.prod(plan.out_shape)
    # (a call this small runs on one thread whatever the setting: that
    # launch is looked up once)
    serial = _launch(plan, "avg_backward", 1)[2:]

    def run(g):
        dt = g.dtype
        if (dt is not comp and dt != comp) or not g.flags.c_contiguous:
            return avg_backward(plan, g)
        gi = np.empty(size, comp)
        cblock, threads = (serial if work < SERIAL_WORK
                           else _launch(plan, "avg_backward", num_threads(work))[2:])
        kernel(g.reshape(-1), gi, geo, cblock, threads, False, None)
        return gi.reshape(in_shape)
    return run


@lru_cache(maxsize=512)
def _stride2_windows(plan: Plan):
    """(kh, ph, sh, kw, pw) of a 1-d or 2-d plan whose fixed windows are 2
    apart along W (kw <= 3 columns, padding pw <= 1 before) and at most 3
    rows along H (K.max_backward_s2); None for other plans."""
    wd, wh, ww = _windows3(plan)
    if plan.rank == 3 or ww.kind != "fixed" or ww.stride != 2 or ww.dilation != 1:
        return None
    if not (ww.kernel <= 3 and ww.pad_before <= 1):
        return None
    if plan.rank == 1:
        return (1, 0, 1, ww.kernel, ww.pad_before)
    if wh.kind != "fixed" or wh.dilation != 1 or wh.kernel > 3:
        return None
    return (wh.kernel, wh.pad_before, wh.stride, ww.kernel, ww.pad_before)


class BadIndices(ValueError):
    """An index outside [-1, plane) met by a max-backward kernel (the caller
    reports which, with the argument checks' message)."""


def max_backward(plan: Plan, grad_output: np.ndarray, indices: np.ndarray, *,
                 out=None) -> np.ndarray:
    """Gradient of the max pool ``plan``, given the forward call's indices.

    Raises :class:`BadIndices` when an index lies outside ``[-1, plane)``
    (``out``, if given, must have been checked beforehand)."""
    comp = plan.compute_dtype
    gk = _flat_input(grad_output, comp)
    ik = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
    gi = _target(out, plan.in_shape, comp, grad_output, indices)
    if gi.size:
        kshape, koshape = plan.kshape, plan.koshape
        n, c = kshape[0], kshape[4]
        threads = num_threads(gk.size + gi.size)
        if gk.size == 0:
            gk, ik = np.zeros(1, comp), np.full(1, -1, np.int64)
        rows = kshape[1] * kshape[2]
        bad = 2
        if c == 1 and comp == np.float32:
            # 2 x 2 windows 2 apart, or 2 x 2 x 2 ones tiling the input: rows
            # written densely (None: other windows)
            done = K.max_backward_pairs(gk, ik, gi.reshape(-1), _geometry(plan),
                                        min(threads, max(1, n * koshape[1] * koshape[2])),
                                        gi.nbytes >= STREAM_BYTES)
            s2 = _stride2_windows(plan) if done is None else None
            if s2 is not None:
                # windows 2 apart along W, overlapping (the ResNet stem's):
                # each input row written once, no scatter
                done = K.max_backward_s2(gk, ik, gi.reshape(-1), _geometry(plan), *s2,
                                         min(threads, n), gi.nbytes >= STREAM_BYTES)
            bad = 2 if done is None else done
        if c > 1 and comp == np.float32:
            # channels-last: each input row once from the windows that read
            # it (windows that do not overlap, or samples too few for the
            # scatter's threads), bands of rows for the threads
            # (2 x 2 x 2 windows tiling the input: each window writes its 8
            # pixels, max_backward_pairs)
            done = K.max_backward_pairs(gk, ik, gi.reshape(-1), _geometry(plan),
                                        min(threads, max(1, n * koshape[1] * koshape[2])),
                                        gi.nbytes >= DENSE_STREAM_BYTES)
            if done is None:
                nbands = min(rows, max(1, -(-8 * threads // n)))
                done = K.max_backward_dense(gk, ik, gi.reshape(-1), _geometry(plan, True),
                                            nbands, min(threads, n * nbands), n < 4 * threads,
                                            gi.nbytes >= DENSE_STREAM_BYTES)
            bad = 2 if done is None else done
        if bad == 2 and c > 1 and rows > 1:
            # channels-last: bands of rows, 8 a thread, or more where that
            # keeps each band in the L2 cache while it is zeroed and added to
            # (also with samples enough for the threads: zeroing whole
            # samples of MBs first measured 1.08-1.19x slower on Intel's
            # Emerald Rapids, the (32, 64, 112, 112) k=3 s=2 backward too)
            nbands = min(rows, max(-(-8 * threads // n), -(-gi.nbytes // n // BAND_BYTES)))
            bad = _kernel("max_backward_bands", comp)(
                gk, ik, gi.reshape(-1), _geometry(plan), nbands,
                min(threads, n * nbands), gi.nbytes >= BAND_STREAM_BYTES)
        if bad == 2:    # one item per sample (any index, as PyTorch's scatter)
            bad = _kernel("max_backward", comp)(
                gk, ik, gi.reshape(-1), n, c, math.prod(kshape[1:4]),
                math.prod(koshape[1:4]), max(c, 1), min(threads, max(1, n)),
                gi.nbytes >= STREAM_BYTES)
        if bad:
            raise BadIndices()
    return _deliver(gi, out, plan.out_dtype)
