"""Slow, obviously-correct NumPy implementations of cypool's operations.

These loop over every output position in Python and share no code with the
compiled kernels (not even the bin formula), so the two can check each
other.  They are what ``python -m cypool`` self-checks against and what the
test suite compares with wherever PyTorch has no matching operation.  Use
them on small arrays only.

Sums are taken in float64 and rounded once to the result dtype, so they
can differ from cypool (which sums in the compute dtype, in PyTorch's order)
by rounding; maxima and indices are exact.

>>> import numpy as np
>>> from cypool import reference
>>> reference.adaptive_pool(np.arange(5.0)[None], 3, "avg", rank=1)
array([[0.5, 2. , 3.5]])
"""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["adaptive_bins", "adaptive_pool", "adaptive_pool_backward", "global_pool",
           "fixed_output_size", "fixed_pool", "fixed_pool_backward"]


def adaptive_bins(size: int, osize: int) -> list[tuple[int, int]]:
    """[start, end) of each adaptive bin: floor(i*I/O) to ceil((i+1)*I/O)."""
    return [((i * size) // osize, -((-(i + 1) * size) // osize)) for i in range(osize)]


def _to_ncx(x: np.ndarray, rank: int, channels_last: bool):
    """(array as (N, C, *spatial), batched) for either layout."""
    batched = x.ndim == rank + 2
    if not batched:
        x = x[None]
    if channels_last:
        x = np.moveaxis(x, -1, 1)
    return x, batched


def _from_ncx(y: np.ndarray, batched: bool, channels_last: bool):
    if channels_last:
        y = np.moveaxis(y, 1, -1)
    return np.ascontiguousarray(y if batched else y[0])


def _result_dtype(dtype, op):
    dt = np.dtype(dtype)
    if op == "max":
        return dt.newbyteorder("=")
    if dt.kind == "f":
        return dt.newbyteorder("=")
    return np.dtype(np.float64)


def adaptive_pool(x, output_size, op: str, rank: int, *, channels_last: bool = False,
                  return_indices: bool = False):
    """Adaptive ``op`` ("avg" or "max") pooling, one output at a time.

    Max: a window containing NaN gives NaN and the index of its last NaN;
    otherwise the first maximum in row-major scan order.
    """
    x = np.asarray(x)
    xn, batched = _to_ncx(x, rank, channels_last)
    spatial = xn.shape[2:]
    if np.ndim(output_size) == 0:
        output_size = (output_size,) * rank
    osize = tuple(s if o is None else int(o) for s, o in zip(spatial, output_size))
    bins = [adaptive_bins(s, o) for s, o in zip(spatial, osize)]
    n, c = xn.shape[:2]
    y = np.zeros((n, c) + osize, dtype=_result_dtype(x.dtype, op))
    idx = np.zeros((n, c) + osize, dtype=np.int64)
    for b, ch in itertools.product(range(n), range(c)):
        plane = xn[b, ch]
        for pos in itertools.product(*(range(o) for o in osize)):
            sl = tuple(slice(*bins[k][pos[k]]) for k in range(rank))
            win = plane[sl]
            if op == "avg":
                y[(b, ch) + pos] = win.astype(np.float64).sum() / win.size
                continue
            flat = win.reshape(-1)
            if flat.dtype.kind == "f" and np.isnan(flat).any():
                j = int(np.flatnonzero(np.isnan(flat))[-1])
            else:
                j = int(np.argmax(flat))
            local = np.unravel_index(j, win.shape)
            glob = tuple(bins[k][pos[k]][0] + local[k] for k in range(rank))
            y[(b, ch) + pos] = flat[j]
            idx[(b, ch) + pos] = np.ravel_multi_index(glob, spatial)
    y = _from_ncx(y, batched, channels_last)
    if op == "max" and return_indices:
        return y, _from_ncx(idx, batched, channels_last)
    return y


def global_pool(x, op: str, rank: int, *, channels_last: bool = False, keepdims: bool = True):
    """Global pooling: :func:`adaptive_pool` with output size 1."""
    y = adaptive_pool(x, 1, op, rank, channels_last=channels_last)
    if keepdims:
        return y
    return y.reshape(y.shape[:-rank - 1] + y.shape[-1:] if channels_last else y.shape[:-rank])


def adaptive_pool_backward(grad_output, input_shape, op: str, rank: int, *, indices=None,
                           channels_last: bool = False):
    """Gradient with respect to the input, scattering one output at a time.

    Average: each bin's gradient spread evenly over the bin.  Max: each
    gradient added at its index.  Accumulates in float64.
    """
    g = np.asarray(grad_output)
    gn, batched = _to_ncx(g, rank, channels_last)
    if not batched:
        input_shape = (1,) + tuple(input_shape)
    in_n = list(input_shape)
    if channels_last:
        in_n.insert(1, in_n.pop())
    spatial = tuple(in_n[2:])
    osize = gn.shape[2:]
    bins = [adaptive_bins(s, o) for s, o in zip(spatial, osize)]
    gi = np.zeros(tuple(in_n), dtype=np.float64)
    if indices is not None:
        idn, _ = _to_ncx(np.asarray(indices), rank, channels_last)
    n, c = gn.shape[:2]
    for b, ch in itertools.product(range(n), range(c)):
        for pos in itertools.product(*(range(o) for o in osize)):
            v = float(gn[(b, ch) + pos])
            if op == "max":
                at = np.unravel_index(int(idn[(b, ch) + pos]), spatial)
                gi[(b, ch) + tuple(at)] += v
            else:
                sl = tuple(slice(*bins[k][pos[k]]) for k in range(rank))
                size = np.prod([e - s for s, e in (bins[k][pos[k]] for k in range(rank))])
                gi[(b, ch) + sl] += v / size
    return _from_ncx(gi.astype(g.dtype.newbyteorder("=")), batched, channels_last)


# ---------------------------------------------------------------------------
# Fixed windows
# ---------------------------------------------------------------------------

def _tuple(v, rank):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank


def _pads(padding, rank, spatial, kernel, stride, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * rank
        out = []
        for i, k, s, d in zip(spatial, kernel, stride, dilation):
            o = -(-i // s)
            total = max((o - 1) * s + (k - 1) * d + 1 - i, 0)
            out.append((total // 2, total - total // 2))
        return out
    pads = _tuple(padding, rank)
    return [tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in pads]


def fixed_output_size(size, k, s, pb, pa, d, ceil_mode):
    """Output extent: floor (or ceil) of (size + pads - d*(k-1) - 1)/s, plus 1;
    with ceil_mode a last window starting at or after size + pb is dropped."""
    span = size + pb + pa - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + pb:
        out -= 1
    return out


def _fixed_geometry(shape_ncx, kernel_size, stride, padding, dilation, ceil_mode, rank):
    spatial = shape_ncx[2:]
    kernel = _tuple(kernel_size, rank)
    stride = kernel if stride is None else _tuple(stride, rank)
    dilation = _tuple(dilation, rank)
    pads = _pads(padding, rank, spatial, kernel, stride, dilation)
    osize = tuple(fixed_output_size(i, k, s, pb, pa, d, ceil_mode)
                  for i, k, s, (pb, pa), d in zip(spatial, kernel, stride, pads, dilation))
    return spatial, kernel, stride, dilation, pads, osize


def _taps(o, i, k, s, pb, pa, d):
    """(real taps, number of taps inside input + padding) of window o along one dim."""
    taps = [o * s - pb + t * d for t in range(k)]
    return [t for t in taps if 0 <= t < i], sum(1 for t in taps if t < i + pa)


def _windows(spatial, kernel, stride, pads, dilation, osize, divisor_override,
             count_include_pad):
    """(output position, its real taps, an average's divisor) for every output.

    The divisor is the override, the taps inside input + padding, or the
    real taps."""
    rank = len(spatial)
    for pos in itertools.product(*(range(o) for o in osize)):
        per = [_taps(pos[j], spatial[j], kernel[j], stride[j], pads[j][0], pads[j][1],
                     dilation[j]) for j in range(rank)]
        real = list(itertools.product(*(p[0] for p in per)))
        if divisor_override is not None:
            div = divisor_override
        elif count_include_pad:
            div = int(np.prod([p[1] for p in per]))
        else:
            div = len(real)
        yield pos, real, div


def fixed_pool(x, kernel_size, op: str, rank: int, *, stride=None, padding=0, dilation=1,
               ceil_mode=False, count_include_pad=True, divisor_override=None,
               channels_last=False, return_indices=False):
    """Fixed-window ``op`` pooling, one output at a time, tap by tap.

    Average: real taps summed in float64, divided by ``divisor_override``,
    or by the taps inside input+padding (``count_include_pad``) or inside
    the input; 0 when that divisor is 0.  Max: real taps in row-major order,
    NaN wins (last NaN), ties first; no real tap gives the dtype's lowest
    value and index -1.
    """
    x = np.asarray(x)
    xn, batched = _to_ncx(x, rank, channels_last)
    spatial, kernel, stride, dilation, pads, osize = _fixed_geometry(
        xn.shape, kernel_size, stride, padding, dilation, ceil_mode, rank)
    n, c = xn.shape[:2]
    rdt = _result_dtype(x.dtype, op)
    y = np.zeros((n, c) + osize, dtype=rdt)
    idx = np.full((n, c) + osize, -1, dtype=np.int64)
    for pos, real, div in _windows(spatial, kernel, stride, pads, dilation, osize,
                                   divisor_override, count_include_pad):
        for b, ch in itertools.product(range(n), range(c)):
            vals = [xn[(b, ch) + t] for t in real]
            if op == "avg":
                y[(b, ch) + pos] = 0 if div == 0 else sum(float(v) for v in vals) / div
                continue
            if not vals:
                y[(b, ch) + pos] = -np.inf if rdt.kind == "f" else (
                    False if rdt.kind == "b" else np.iinfo(rdt).min)
                continue
            nans = [j for j, v in enumerate(vals) if v != v]
            j = nans[-1] if nans else int(np.argmax(np.array(vals)))
            y[(b, ch) + pos] = vals[j]
            idx[(b, ch) + pos] = np.ravel_multi_index(real[j], spatial)
    y = _from_ncx(y, batched, channels_last)
    if op == "max" and return_indices:
        return y, _from_ncx(idx, batched, channels_last)
    return y


def fixed_pool_backward(grad_output, input_shape, kernel_size, op: str, rank: int, *,
                        indices=None, stride=None, padding=0, dilation=1, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, channels_last=False):
    """Gradient of :func:`fixed_pool` with respect to its input (float64 sums)."""
    g = np.asarray(grad_output)
    gn, batched = _to_ncx(g, rank, channels_last)
    in_n = ([] if batched else [1]) + list(input_shape)
    if channels_last:
        in_n.insert(1, in_n.pop())
    spatial, kernel, stride, dilation, pads, osize = _fixed_geometry(
        tuple(in_n), kernel_size, stride, padding, dilation, ceil_mode, rank)
    gi = np.zeros(tuple(in_n), dtype=np.float64)
    if indices is not None:
        idn, _ = _to_ncx(np.asarray(indices), rank, channels_last)
    n, c = gn.shape[:2]
    for pos, real, div in _windows(spatial, kernel, stride, pads, dilation, osize,
                                   divisor_override, count_include_pad):
        for b, ch in itertools.product(range(n), range(c)):
            v = float(gn[(b, ch) + pos])
            if op == "max":
                j = int(idn[(b, ch) + pos])
                if j >= 0:
                    gi[(b, ch) + tuple(np.unravel_index(j, spatial))] += v
            elif div != 0:
                for t in real:
                    gi[(b, ch) + t] += v / div
    return _from_ncx(gi.astype(g.dtype.newbyteorder("=")), batched, channels_last)
