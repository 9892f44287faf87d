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

__all__ = ["adaptive_bins", "adaptive_pool", "adaptive_pool_backward", "global_pool"]


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
