"""Fixed-window pooling (avg_pool{n}d, max_pool{n}d and their backwards)
against PyTorch 2.13 CPU and against ``cypool.reference``.

Two seeded random sweeps:

* ``test_torch_sweep``: the options PyTorch has (symmetric padding up to
  kernel//2, dilation for max pooling, ceil_mode, count_include_pad,
  divisor_override), both layouts, float32/float64, odd values (NaN, +-inf,
  ties, signed zeros) and odd memory layouts.  Forward values, indices and
  the gradients of autograd must be *bit-identical* to PyTorch; where
  PyTorch refuses a call for a reason cypool shares (output too small,
  padding over half the kernel), cypool must raise ValueError.
* ``test_beyond_torch_sweep``: what PyTorch lacks ((before, after) padding
  pairs, "same", "valid", dilated averages, windows lying wholly in the
  padding) against the slow NumPy reference.

Each sweep is split into chunks of a few hundred cases, one test per chunk;
a failure names the chunk, the case number and every parameter of the case.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import cypool
from cypool import reference

torch = pytest.importorskip("torch")
F = torch.nn.functional

SWEEP_SEED = 0x5EED_F1C5
TORCH_CHUNKS, TORCH_CHUNK_SIZE = 12, 250          # 3000 cases
REF_CHUNKS, REF_CHUNK_SIZE = 8, 125               # 1000 cases

EPS = {np.dtype(np.float32): float(np.finfo(np.float32).eps),
       np.dtype(np.float64): float(np.finfo(np.float64).eps)}
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


# ---------------------------------------------------------------------------
# Helpers (kept here: test modules cannot import each other)
# ---------------------------------------------------------------------------

def _fn(name, rank):
    return getattr(cypool, f"{name}_pool{rank}d")


def _bwd(name, rank):
    return getattr(cypool, f"{name}_pool{rank}d_backward")


def _to_nc(a, rank, channels_last):
    """cypool layout -> channels-first (a view)."""
    if not channels_last:
        return a
    return np.moveaxis(a, -1, a.ndim - rank - 1)


def _from_nc(a, rank, channels_last):
    """channels-first -> cypool layout (a view)."""
    if not channels_last:
        return a
    return np.moveaxis(a, a.ndim - rank - 1, -1)


def _torch_tensor(a, rank, channels_last, torch_cl=False):
    """A cypool-layout array as the channels-first tensor torch takes (a copy)."""
    nc = np.ascontiguousarray(_to_nc(a, rank, channels_last))
    t = torch.from_numpy(nc.copy())
    if torch_cl:
        t = t.contiguous(memory_format=torch.channels_last if rank == 2
                         else torch.channels_last_3d)
    return t


def _from_torch(t, rank, channels_last):
    return np.ascontiguousarray(_from_nc(t.detach().numpy(), rank, channels_last))


def _assert_bitwise(got, want, what, params, zero_sign=True):
    """Same shape, dtype, NaN positions, values and (if ``zero_sign``) signs of
    zeros: bit for bit, NaN payloads aside."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}\n{params}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}\n{params}"
    if got.dtype.kind != "f":
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)[:5]
            raise AssertionError(f"{what}: {np.count_nonzero(got != want)} of {got.size} "
                                 f"differ, first at {bad.tolist()}: got "
                                 f"{[got[tuple(b)] for b in bad]} want "
                                 f"{[want[tuple(b)] for b in bad]}\n{params}")
        return
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    assert np.array_equal(nan_g, nan_w), (
        f"{what}: NaN positions differ (got {nan_g.sum()}, want {nan_w.sum()})\n{params}")
    g, w = got[~nan_g], want[~nan_w]
    same = g == w
    if zero_sign:
        same &= np.signbit(g) == np.signbit(w)
    if not same.all():
        d = np.abs(g.astype(np.float64) - w.astype(np.float64))
        d = d[np.isfinite(d)]
        raise AssertionError(
            f"{what}: {np.count_nonzero(~same)} of {g.size} values not bit-identical "
            f"(max |diff| {d.max(initial=0.0):.3g}); first: got {g[~same][:4]} want "
            f"{w[~same][:4]}\n{params}")


def _assert_near(got, want, atol, what, params):
    """Values within rtol (per dtype) plus ``atol``; NaN/inf in the same places."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}\n{params}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}\n{params}"
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                               rtol=RTOL[got.dtype], atol=atol, equal_nan=True,
                               err_msg=f"{what}\n{params}")


def _sum_atol(dtype, taps, scale):
    """Bound on the rounding difference between a sequential sum of ``taps``
    terms of magnitude <= ``scale`` in ``dtype`` (divided by an integer of
    magnitude >= 1) and the same sum taken exactly: (taps) * eps * taps * scale."""
    return 2.0 * EPS[np.dtype(dtype)] * taps * taps * max(scale, 1.0)


def _values(rng, shape, kind, dtype):
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "ties":                       # many equal maxima, exact sums
        x = np.round(rng.standard_normal(shape) * 2) / 2
    elif kind == "special":                    # ties plus NaN, +inf, -inf
        x = np.round(rng.standard_normal(shape) * 2) / 2
        r = rng.random(shape)
        x[r < 0.08] = np.nan
        x[(r >= 0.08) & (r < 0.13)] = np.inf
        x[(r >= 0.13) & (r < 0.25)] = -np.inf
    elif kind == "neginf":                     # mostly -inf: all -inf windows
        x = np.full(shape, -np.inf)
        r = rng.random(shape)
        x[r < 0.15] = rng.standard_normal(int((r < 0.15).sum()))
    elif kind == "signed0":                    # -0.0 vs 0.0 ties
        x = rng.choice(np.array([0.0, -0.0, -1.0]), size=shape)
    elif kind == "big":                        # cancellation in the sums
        x = rng.standard_normal(shape) * 1e6 + rng.standard_normal(shape)
    else:
        raise ValueError(kind)
    return x.astype(dtype)


def _make_view(rng, x, how):
    """Return an array equal to ``x`` with the requested memory layout."""
    if how == "contig":
        return np.ascontiguousarray(x)
    if how == "fortran":
        return np.asfortranarray(x)
    if how == "step":                         # every other element of a bigger array
        big = np.zeros(tuple(2 * s for s in x.shape), x.dtype)
        big[tuple(slice(None, None, 2) for _ in x.shape)] = x
        v = big[tuple(slice(None, None, 2) for _ in x.shape)]
        assert not v.flags.c_contiguous or x.size <= 1
        return v
    if how == "negative":                     # negative strides on every axis
        return np.ascontiguousarray(x[tuple(slice(None, None, -1) for _ in x.shape)])[
            tuple(slice(None, None, -1) for _ in x.shape)]
    if how == "swapaxes":                     # transposed storage
        return np.ascontiguousarray(x.T).T
    raise ValueError(how)


def _per_dim(rng, rank, lo, hi, uniform):
    if uniform:
        return (int(rng.integers(lo, hi + 1)),) * rank
    return tuple(int(rng.integers(lo, hi + 1)) for _ in range(rank))


def _as_arg(vals, uniform, rng):
    """An int (when all dims agree and we like) or a per-dim tuple/list."""
    if uniform and rng.random() < 0.7:
        return vals[0]
    return list(vals) if rng.random() < 0.2 else tuple(vals)


# ---------------------------------------------------------------------------
# Sweep 1: against PyTorch
# ---------------------------------------------------------------------------

def _draw_torch_case(rng):
    rank = int(rng.integers(1, 4))
    op = "avg" if rng.random() < 0.5 else "max"
    uniform = rng.random() < 0.5
    kernel = _per_dim(rng, rank, 1, 4, uniform)
    stride = None if rng.random() < 0.25 else _per_dim(rng, rank, 1, 3, uniform)
    dilation = _per_dim(rng, rank, 1, 2, uniform) if op == "max" else (1,) * rank
    pads = [int(rng.integers(0, k // 2 + 1)) for k in kernel]
    if uniform:                                # kernel is the same in every dim
        pads = [pads[0]] * rank
    if rng.random() < 0.04:                    # invalid: over half the kernel
        j = int(rng.integers(rank))
        pads[j] = kernel[j] // 2 + 1
    ceil_mode = bool(rng.random() < 0.5)
    cip = bool(rng.random() < 0.5)
    divisor = None
    if op == "avg" and rng.random() < 0.3:
        divisor = int(rng.choice([-7, -3, -2, -1, 1, 2, 3, 4, 5, 9, 17]))
    channels_last = bool(rng.random() < 0.5)
    dtype = np.dtype(np.float32 if rng.random() < 0.5 else np.float64)
    batched = bool(rng.random() < 0.7)
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    hi = 9 if rank < 3 else 7
    spatial = tuple(int(rng.integers(1, hi + 1)) for _ in range(rank))
    kind = str(rng.choice(["normal", "normal", "ties", "ties", "special", "neginf",
                           "signed0", "big"]))
    view = str(rng.choice(["contig", "contig", "fortran", "step", "negative", "swapaxes"]))
    gview = str(rng.choice(["contig", "contig", "step", "negative"]))
    # Half the channels-last cases hand PyTorch a channels_last tensor, so that
    # its NHWC kernels are the oracle too.  2d only: PyTorch 2.13's
    # channels_last_3d max_pool3d gives a wrong index for windows where
    # nothing beats -inf when C % vector width != 0 and C > 1 (it drops the
    # depth term: (1, 3, 3, 2, 2) all -inf, kernel 1 gives 0..3 repeated).
    torch_cl = bool(channels_last and batched and rank == 2 and rng.random() < 0.5)
    return dict(rank=rank, op=op, kernel=kernel, stride=stride, padding=tuple(pads),
                dilation=dilation, ceil_mode=ceil_mode, count_include_pad=cip,
                divisor_override=divisor, channels_last=channels_last, dtype=dtype,
                batched=batched, n=n, c=c, spatial=spatial, kind=kind, view=view,
                gview=gview, torch_cl=torch_cl, uniform=uniform)


def _shape(p, spatial):
    lead = (p["n"],) if p["batched"] else ()
    if p["channels_last"]:
        return lead + tuple(spatial) + (p["c"],)
    return lead + (p["c"],) + tuple(spatial)


def _expected_out_spatial(p):
    """Output extents by PyTorch's formula, or None when PyTorch (and cypool)
    must refuse the call: padding over half the kernel or an empty output."""
    stride = p["kernel"] if p["stride"] is None else p["stride"]
    out = []
    for size, k, s, pad, d in zip(p["spatial"], p["kernel"], stride, p["padding"],
                                  p["dilation"]):
        if pad > k // 2:
            return None
        o = reference.fixed_output_size(size, k, s, pad, pad, d, p["ceil_mode"])
        if o < 1:
            return None
        out.append(o)
    return tuple(out)


def _empty_window_mask(p, out_shape):
    """True at outputs whose window has no tap inside the input, worked out
    from the geometry alone (never from either library's indices)."""
    stride = p["kernel"] if p["stride"] is None else p["stride"]
    osp = _expected_out_spatial(p)
    mask = np.zeros(osp, bool)
    for j, (size, k, s, pad, d, o) in enumerate(zip(p["spatial"], p["kernel"], stride,
                                                     p["padding"], p["dilation"], osp)):
        e = np.array([not any(0 <= w * s - pad + t * d < size for t in range(k))
                      for w in range(o)])
        mask |= e.reshape([-1 if i == j else 1 for i in range(p["rank"])])
    nc_shape = _to_nc(np.empty(out_shape, bool), p["rank"], p["channels_last"]).shape
    return np.ascontiguousarray(_from_nc(np.broadcast_to(mask, nc_shape), p["rank"],
                                         p["channels_last"]))


def _torch_forward(p, t):
    rank, k, s, pad = p["rank"], p["kernel"], p["stride"], p["padding"]
    if p["op"] == "max":
        return getattr(F, f"max_pool{rank}d")(t, k, s, pad, p["dilation"], p["ceil_mode"],
                                              return_indices=True)
    if rank == 1 and p["divisor_override"] is not None:
        # torch's avg_pool1d has no divisor_override; it is avg_pool2d on (.., 1, L)
        # internally, so call that directly.
        y = F.avg_pool2d(t.unsqueeze(-2), (1, k[0]), None if s is None else (1, s[0]),
                         (0, pad[0]), p["ceil_mode"], p["count_include_pad"],
                         p["divisor_override"])
        return y.squeeze(-2), None
    if rank == 1:
        return F.avg_pool1d(t, k, s, pad, p["ceil_mode"], p["count_include_pad"]), None
    return getattr(F, f"avg_pool{rank}d")(t, k, s, pad, p["ceil_mode"],
                                          p["count_include_pad"], p["divisor_override"]), None


def _cypool_args(p, rng):
    """The call's arguments in a randomly chosen (but equivalent) spelling."""
    u = p["uniform"]
    return dict(kernel_size=_as_arg(p["kernel"], u, rng),
                stride=None if p["stride"] is None else _as_arg(p["stride"], u, rng),
                padding=_as_arg(p["padding"], len(set(p["padding"])) == 1, rng),
                dilation=_as_arg(p["dilation"], u, rng), ceil_mode=p["ceil_mode"])


def _run_torch_case(p, rng, tag):
    rank, op, dtype, cl = p["rank"], p["op"], p["dtype"], p["channels_last"]
    params = f"[{tag}] " + ", ".join(f"{k}={v!r}" for k, v in p.items())
    x = _make_view(rng, _values(rng, _shape(p, p["spatial"]), p["kind"], dtype), p["view"])
    x_before = x.copy()
    a = _cypool_args(p, rng)
    fwd = _fn(op, rank)

    def call():
        if op == "avg":
            return fwd(x, a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                       p["count_include_pad"], p["divisor_override"], dilation=a["dilation"],
                       channels_last=cl)
        return fwd(x, a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                   a["ceil_mode"], return_indices=True, channels_last=cl)

    osp = _expected_out_spatial(p)

    t = _torch_tensor(x, rank, cl, p["torch_cl"]).requires_grad_(True)
    try:
        ty, ti = _torch_forward(p, t)
        torch_err = None
    except RuntimeError as e:
        ty = ti = None
        torch_err = str(e)

    if osp is None:
        # Both must refuse: PyTorch for its reason, cypool with a ValueError.
        assert torch_err is not None, f"torch accepted an invalid case\n{params}"
        with pytest.raises(ValueError):
            call()
        return "error"

    res = call()
    np.testing.assert_array_equal(x, x_before, err_msg=f"input modified\n{params}")
    y, idx = res if op == "max" else (res, None)
    assert y.shape == _shape(p, osp), f"output shape {y.shape}\n{params}"
    assert y.dtype == dtype, f"output dtype {y.dtype}\n{params}"

    g = _make_view(rng, _values(rng, y.shape, "normal", dtype), p["gview"])
    if op == "avg":
        gx = _bwd("avg", rank)(g, x.shape, a["kernel_size"], a["stride"], a["padding"],
                               a["ceil_mode"], p["count_include_pad"], p["divisor_override"],
                               dilation=a["dilation"], channels_last=cl)
    else:
        gx = _bwd("max", rank)(g, idx, x.shape, a["kernel_size"], a["stride"], a["padding"],
                               a["dilation"], a["ceil_mode"], channels_last=cl)
    assert gx.shape == x.shape and gx.dtype == dtype, f"grad {gx.shape} {gx.dtype}\n{params}"

    if torch_err is not None:
        # The one documented refusal cypool does not share: avg_pool3d's
        # "smaller than kernel size" although padding makes the call valid.
        assert op == "avg" and rank == 3 and "smaller than kernel size" in torch_err, (
            f"torch refused a valid case: {torch_err}\n{params}")
        return _check_with_reference(p, x, y, None, g, gx, params)

    if op == "max":
        tidx = _from_torch(ti, rank, cl)
        empty = _empty_window_mask(p, y.shape)
        if empty.any():
            # Windows wholly in the padding (dilation only).  PyTorch returns an
            # index outside the window, even outside the plane or aliasing
            # another element of it, and its backward would then write out of
            # bounds: it is never run on these.  cypool gives -1 there and
            # agrees with PyTorch everywhere else; the values (-inf) agree too.
            _assert_bitwise(y, _from_torch(ty, rank, cl), "max values", params)
            assert np.array_equal(idx == -1, empty), f"index -1 misplaced\n{params}"
            _assert_bitwise(idx[~empty], tidx[~empty], "indices", params)
            return _check_with_reference(p, x, y, idx, g, gx, params)
        _assert_bitwise(idx, tidx, "indices", params)

    # The sign of a zero average under a negative divisor_override is checked
    # once, by test_negative_divisor_zero_window_sum (a known discrepancy);
    # the sweep checks every other bit.
    neg_div = p["divisor_override"] is not None and p["divisor_override"] < 0
    _assert_bitwise(y, _from_torch(ty, rank, cl), f"{op} forward", params,
                    zero_sign=not neg_div)
    ty.backward(_torch_tensor(g, rank, cl))
    _assert_bitwise(gx, _from_torch(t.grad, rank, cl), f"{op} backward", params)
    return "torch"


def _check_with_reference(p, x, y, idx, g, gx, params):
    rank, op, cl = p["rank"], p["op"], p["channels_last"]
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
              ceil_mode=p["ceil_mode"], channels_last=cl)
    if op == "avg":
        kw.update(count_include_pad=p["count_include_pad"],
                  divisor_override=p["divisor_override"])
    ref = reference.fixed_pool(x, p["kernel"], op, rank, return_indices=op == "max", **kw)
    taps = math.prod(p["kernel"])
    if op == "max":
        ry, ri = ref
        _assert_bitwise(y, ry, "max values vs reference", params)
        _assert_bitwise(idx, ri, "indices vs reference", params)
        rg = reference.fixed_pool_backward(g, x.shape, p["kernel"], "max", rank,
                                           indices=idx, **kw)
    else:
        finite = np.abs(x[np.isfinite(x)])
        _assert_near(y, ref, _sum_atol(p["dtype"], taps, finite.max(initial=0)),
                     "avg forward vs reference", params)
        rg = reference.fixed_pool_backward(g, x.shape, p["kernel"], "avg", rank, **kw)
    _assert_near(gx, rg, _sum_atol(p["dtype"], taps, np.abs(g).max(initial=0)),
                 f"{op} backward vs reference", params)
    return "reference"


@pytest.fixture
def few_threads(request):
    """Run a chunk with cypool at ``request.param`` OpenMP threads (None: its
    default) and PyTorch at one, restoring both afterwards.

    The sweep makes thousands of calls on tiny arrays; on a small, busy
    machine every parallel region can wait milliseconds for a core, so most
    chunks run single-threaded.  Chunk 0 keeps cypool's default thread count
    (results must not depend on it: see test_threads.py).
    """
    before_c, before_t = cypool.get_num_threads(), torch.get_num_threads()
    if request.param is not None:
        cypool.set_num_threads(request.param)
    torch.set_num_threads(1)
    yield cypool.get_num_threads()
    cypool.set_num_threads(before_c)
    torch.set_num_threads(before_t)


@pytest.mark.parametrize("chunk, few_threads",
                         [(i, None if i == 0 else 1) for i in range(TORCH_CHUNKS)],
                         indirect=["few_threads"])
def test_torch_sweep(chunk, few_threads):
    """3000 random calls, bit-identical to PyTorch CPU (forward, indices, grad)."""
    rng = np.random.default_rng([SWEEP_SEED, 1, chunk])
    outcomes = {"torch": 0, "error": 0, "reference": 0}
    for i in range(TORCH_CHUNK_SIZE):
        p = _draw_torch_case(rng)
        outcomes[_run_torch_case(p, rng, f"chunk {chunk} case {i} "
                                          f"({few_threads} threads)")] += 1
    # The chunk must really have compared something with torch.
    assert outcomes["torch"] > TORCH_CHUNK_SIZE // 2, outcomes


def test_torch_sweep_covers_the_classes():
    """The sweep's generator reaches every class it is meant to test."""
    rng = np.random.default_rng([SWEEP_SEED, 99])
    seen = set()
    for _ in range(3000):
        p = _draw_torch_case(rng)
        seen.add(("valid" if _expected_out_spatial(p) else "invalid", p["op"], p["rank"]))
        if p["divisor_override"] is not None:
            seen.add(("div", p["divisor_override"] < 0, p["rank"]))
        seen.add(("cl", p["channels_last"], p["torch_cl"], p["batched"]))
        seen.add(("kind", p["kind"]))
        seen.add(("view", p["view"]))
        seen.add(("dilated", p["op"], max(p["dilation"]) > 1))
        seen.add(("ceil", p["ceil_mode"], p["count_include_pad"]))
    missing = [c for c in
               [(v, op, r) for v in ("valid", "invalid") for op in ("avg", "max")
                for r in (1, 2, 3)]
               + [("div", neg, r) for neg in (True, False) for r in (1, 2, 3)]
               + [("cl", True, True, True), ("cl", True, False, True), ("cl", True, False, False),
                  ("cl", False, False, True), ("cl", False, False, False)]
               + [("kind", k) for k in ("normal", "ties", "special", "neginf", "signed0", "big")]
               + [("view", v) for v in ("contig", "fortran", "step", "negative", "swapaxes")]
               + [("dilated", "max", True), ("dilated", "avg", False)]
               + [("ceil", c, i) for c in (True, False) for i in (True, False)]
               if c not in seen]
    assert not missing, missing


# ---------------------------------------------------------------------------
# Sweep 2: beyond PyTorch, against cypool.reference
# ---------------------------------------------------------------------------

def _random_pairs(rng, kernel, dilation):
    """(before, after) pads, each in [0, dilation*(k-1)]."""
    return tuple((int(rng.integers(0, d * (k - 1) + 1)), int(rng.integers(0, d * (k - 1) + 1)))
                 for k, d in zip(kernel, dilation))


def _draw_ref_case(rng):
    rank = int(rng.integers(1, 4))
    op = "avg" if rng.random() < 0.5 else "max"
    kernel = tuple(int(rng.integers(1, 5)) for _ in range(rank))
    dilation = tuple(int(rng.integers(1, 4)) for _ in range(rank))
    stride = None if rng.random() < 0.2 else tuple(int(rng.integers(1, 4)) for _ in range(rank))
    hi = 7 if rank < 3 else 5
    spatial = [int(rng.integers(1, hi + 1)) for _ in range(rank)]
    mode = str(rng.choice(["pairs", "pairs", "pairs", "same", "same", "valid", "sym",
                           "allpad", "allpad"]))
    if mode == "pairs":
        padding = _random_pairs(rng, kernel, dilation)
        if rng.random() < 0.05:                # invalid: a pad beyond dilation*(k-1)
            j = int(rng.integers(rank))
            padding = padding[:j] + ((dilation[j] * (kernel[j] - 1) + 1, 0),) + padding[j + 1:]
    elif mode == "sym":
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    elif mode == "allpad":
        # One dimension gets a window that straddles a short input without
        # touching it: input shorter than the dilation, padding on both sides.
        j = int(rng.integers(rank))
        k, d = int(rng.integers(2, 4)), int(rng.integers(2, 4))
        kernel = kernel[:j] + (k,) + kernel[j + 1:]
        dilation = dilation[:j] + (d,) + dilation[j + 1:]
        spatial[j] = int(rng.integers(1, d))
        padding = _random_pairs(rng, kernel, dilation)
        padding = padding[:j] + ((int(rng.integers(1, d * (k - 1) + 1)),
                                  int(rng.integers(1, d * (k - 1) + 1))),) + padding[j + 1:]
        if stride is not None:
            stride = stride[:j] + (1,) + stride[j + 1:]
    else:
        padding = mode
    divisor = None
    if op == "avg" and rng.random() < 0.25:
        divisor = int(rng.choice([-3, -1, 1, 2, 5]))
    return dict(rank=rank, op=op, kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=bool(rng.random() < 0.5),
                count_include_pad=bool(rng.random() < 0.5), divisor_override=divisor,
                channels_last=bool(rng.random() < 0.5),
                dtype=np.dtype(np.float32 if rng.random() < 0.5 else np.float64),
                batched=bool(rng.random() < 0.7), n=int(rng.integers(1, 3)),
                c=int(rng.integers(1, 3)), spatial=tuple(spatial), mode=mode,
                kind=str(rng.choice(["normal", "ties", "special", "neginf", "big"])),
                view=str(rng.choice(["contig", "step", "negative", "swapaxes"])))


def _tf_same_pads(spatial, kernel, stride, dilation):
    """TensorFlow's SAME padding, written out independently of cypool."""
    pads = []
    for size, k, s, d in zip(spatial, kernel, stride, dilation):
        out = math.ceil(size / s)
        total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _ref_pairs(p):
    """(before, after) pads per dim, and whether cypool must accept them."""
    stride = p["kernel"] if p["stride"] is None else p["stride"]
    pad = p["padding"]
    if pad == "same":
        return _tf_same_pads(p["spatial"], p["kernel"], stride, p["dilation"]), True
    if pad == "valid":
        return ((0, 0),) * p["rank"], True
    if isinstance(pad[0], tuple):
        ok = all(0 <= v <= d * (k - 1) for pr, k, d in zip(pad, p["kernel"], p["dilation"])
                 for v in pr)
        return pad, ok
    return tuple((v, v) for v in pad), all(v <= k // 2 for v, k in zip(pad, p["kernel"]))


def _run_ref_case(p, rng, tag):
    rank, op, cl, dtype = p["rank"], p["op"], p["channels_last"], p["dtype"]
    params = f"[{tag}] " + ", ".join(f"{k}={v!r}" for k, v in p.items())
    stride = p["kernel"] if p["stride"] is None else p["stride"]
    pairs, ok = _ref_pairs(p)
    osp = tuple(reference.fixed_output_size(size, k, s, pb, pa, d, p["ceil_mode"])
                for size, k, s, (pb, pa), d in zip(p["spatial"], p["kernel"], stride, pairs,
                                                    p["dilation"]))
    x = _make_view(rng, _values(rng, _shape(p, p["spatial"]), p["kind"], dtype), p["view"])
    x_before = x.copy()
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
              ceil_mode=p["ceil_mode"], channels_last=cl)
    akw = dict(count_include_pad=p["count_include_pad"], divisor_override=p["divisor_override"])

    def call():
        if op == "avg":
            return _fn("avg", rank)(x, p["kernel"], **akw, **kw)
        return _fn("max", rank)(x, p["kernel"], return_indices=True, **kw)
    if p["mode"] == "same":
        assert osp == tuple(math.ceil(s / st) for s, st in zip(p["spatial"], stride)), params
    if not ok or min(osp) < 1:
        with pytest.raises(ValueError):
            call()
        return "error"
    res = call()
    np.testing.assert_array_equal(x, x_before, err_msg=f"input modified\n{params}")
    taps = math.prod(p["kernel"])
    rkw = dict(kw, padding=pairs)
    if op == "max":
        y, idx = res
        ry, ri = reference.fixed_pool(x, p["kernel"], "max", rank, return_indices=True, **rkw)
        _assert_bitwise(y, ry, "max values", params)
        _assert_bitwise(idx, ri, "indices", params)
        g = _make_view(rng, _values(rng, y.shape, "normal", dtype), p["view"])
        gx = _bwd("max", rank)(g, idx, x.shape, p["kernel"], p["stride"], p["padding"],
                               p["dilation"], p["ceil_mode"], channels_last=cl)
        rg = reference.fixed_pool_backward(g, x.shape, p["kernel"], "max", rank, indices=ri,
                                           **rkw)
        found_empty = bool((idx == -1).any())
    else:
        y = res
        ry = reference.fixed_pool(x, p["kernel"], "avg", rank, **akw, **rkw)
        finite = np.abs(x[np.isfinite(x)])
        _assert_near(y, ry, _sum_atol(dtype, taps, finite.max(initial=0)), "avg forward", params)
        g = _make_view(rng, _values(rng, y.shape, "normal", dtype), p["view"])
        gx = _bwd("avg", rank)(g, x.shape, p["kernel"], p["stride"], p["padding"],
                               p["ceil_mode"], p["count_include_pad"], p["divisor_override"],
                               dilation=p["dilation"], channels_last=cl)
        rg = reference.fixed_pool_backward(g, x.shape, p["kernel"], "avg", rank, **akw, **rkw)
        found_empty = False
    assert y.shape == _shape(p, osp), f"shape {y.shape}\n{params}"
    assert gx.shape == x.shape and gx.dtype == dtype, f"grad {gx.shape} {gx.dtype}\n{params}"
    _assert_near(gx, rg, _sum_atol(dtype, taps, np.abs(g).max(initial=0)), f"{op} backward",
                 params)
    return "empty" if found_empty else "ok"


@pytest.mark.parametrize("chunk, few_threads",
                         [(i, None if i == 0 else 1) for i in range(REF_CHUNKS)],
                         indirect=["few_threads"])
def test_beyond_torch_sweep(chunk, few_threads):
    """1000 random calls with (before, after) pairs, "same", "valid", dilated
    averages and all-padding windows, against cypool.reference."""
    rng = np.random.default_rng([SWEEP_SEED, 2, chunk])
    outcomes = {"ok": 0, "empty": 0, "error": 0}
    for i in range(REF_CHUNK_SIZE):
        p = _draw_ref_case(rng)
        outcomes[_run_ref_case(p, rng, f"chunk {chunk} case {i}")] += 1
    assert outcomes["ok"] > REF_CHUNK_SIZE // 2, outcomes
    assert outcomes["empty"] > 0, outcomes          # all-padding max windows were reached


# ---------------------------------------------------------------------------
# Documented edge cases (pytorch-semantics.md section 2), exact values
# ---------------------------------------------------------------------------

FLOATS = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_all_neginf_window_index_is_first_valid_element(dtype, channels_last):
    """Section 2.3: 3x3 all -inf, k=3, s=1, p=1 -> -inf and the first valid
    element of each clipped window."""
    x = np.full((1, 1, 3, 3), -np.inf, dtype)
    xl = np.moveaxis(x, 1, -1) if channels_last else x
    y, idx = cypool.max_pool2d(xl, 3, 1, 1, return_indices=True, channels_last=channels_last)
    assert y.dtype == dtype and np.all(y == -np.inf)
    assert idx.reshape(-1).tolist() == [0, 0, 1, 0, 0, 1, 3, 3, 4]
    t_y, t_i = F.max_pool2d(torch.from_numpy(x), 3, 1, 1, return_indices=True)
    assert idx.reshape(-1).tolist() == t_i.reshape(-1).tolist()
    # 1-d and 3-d: the same rule
    y1, i1 = cypool.max_pool1d(np.full((1, 3), -np.inf, dtype), 3, 1, 1, return_indices=True)
    assert i1.tolist() == [[0, 0, 1]]
    y3, i3 = cypool.max_pool3d(np.full((1, 2, 2, 2), -np.inf, dtype), 2, 1, 1,
                               return_indices=True)
    t3 = F.max_pool3d(torch.full((1, 2, 2, 2), -np.inf, dtype=torch.float64), 2, 1, 1,
                      return_indices=True)[1].numpy()
    np.testing.assert_array_equal(i3, t3)
    assert np.all(y3 == -np.inf)


@pytest.mark.parametrize("dtype", FLOATS)
def test_overlapping_max_windows_accumulate_gradient(dtype):
    """Section 2.6: [1, 5, 2, 0], k=3, s=1, grad_out [10, 100] -> [0, 110, 0, 0]."""
    x = np.array([[1, 5, 2, 0]], dtype)
    y, idx = cypool.max_pool1d(x, 3, 1, return_indices=True)
    assert y.tolist() == [[5, 5]] and idx.tolist() == [[1, 1]]
    gx = cypool.max_pool1d_backward(np.array([[10, 100]], dtype), idx, x.shape, 3, 1)
    assert gx.dtype == dtype and gx.tolist() == [[0, 110, 0, 0]]
    # the same in 2-d and 3-d, channels last
    gx2 = cypool.max_pool2d_backward(np.array([10, 100], dtype).reshape(2, 1, 1),
                                     idx.reshape(2, 1, 1), (4, 1, 1), (3, 1), 1,
                                     channels_last=True)
    assert gx2.reshape(-1).tolist() == [0, 110, 0, 0]
    gx3 = cypool.max_pool3d_backward(np.array([10, 100], dtype).reshape(1, 1, 1, 1, 2),
                                     idx.reshape(1, 1, 1, 1, 2), (1, 1, 1, 1, 4), (1, 1, 3), 1)
    assert gx3.reshape(-1).tolist() == [0, 110, 0, 0]


@pytest.mark.parametrize("dtype", FLOATS)
def test_ceil_mode_and_count_include_pad(dtype):
    """Section 2.7, x = [1..5]."""
    x = np.arange(1, 6, dtype=dtype).reshape(1, 1, 5)
    f = cypool.avg_pool1d
    assert f(x, 3, 2, 1, count_include_pad=True).tolist() == [[[1.0, 3.0, 3.0]]]
    assert f(x, 3, 2, 1, count_include_pad=False).tolist() == [[[1.5, 3.0, 4.5]]]
    # the ceil overhang is not counted, with or without count_include_pad
    for cip in (True, False):
        assert f(x, 2, 2, 0, ceil_mode=True, count_include_pad=cip).tolist() == \
            [[[1.5, 3.5, 5.0]]]
    # ceil_mode with padding: the last window starts inside the input
    y = f(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    t = F.avg_pool1d(torch.from_numpy(x), 3, 2, 1, ceil_mode=True, count_include_pad=True)
    _assert_bitwise(y, t.numpy(), "avg ceil+pad", "x=[1..5], k=3, s=2, p=1, ceil")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_4x4_k3_s2_p1(dtype, channels_last):
    """Section 2.8: arange(16) 4x4, k=3, s=2, p=1."""
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    xl = np.moveaxis(x, 1, -1) if channels_last else x
    d = np.dtype(dtype).type
    want = {True: [[d(10) / d(9), d(24) / d(9)], [d(51) / d(9), d(90) / d(9)]],
            False: [[d(10) / d(4), d(24) / d(6)], [d(51) / d(6), d(90) / d(9)]]}
    for cip in (True, False):
        y = cypool.avg_pool2d(xl, 3, 2, 1, count_include_pad=cip, channels_last=channels_last)
        np.testing.assert_array_equal(y.reshape(2, 2), np.array(want[cip], dtype))
        assert y.dtype == dtype
    np.testing.assert_allclose(
        cypool.avg_pool2d(x, 3, 2, 1).reshape(-1), [1.111, 2.667, 5.667, 10], atol=5e-4)


@pytest.mark.parametrize("dtype", FLOATS)
def test_avg_backward_exclude_pad(dtype):
    """Section 2.9: ones(1,1,1,3), k=(1,3), s=1, p=(0,1), cip=False ->
    [0.8333, 1.3333, 0.8333] (= 1/2+1/3, 1/2+1/3+1/2, 1/3+1/2)."""
    g = np.ones((1, 1, 1, 3), dtype)
    gx = cypool.avg_pool2d_backward(g, (1, 1, 1, 3), (1, 3), 1, (0, 1), False, False, None)
    np.testing.assert_allclose(gx.reshape(-1), [5 / 6, 4 / 3, 5 / 6], rtol=RTOL[np.dtype(dtype)])
    t = torch.ones((1, 1, 1, 3), dtype=getattr(torch, np.dtype(dtype).name),
                   requires_grad=True)
    F.avg_pool2d(t, (1, 3), 1, (0, 1), count_include_pad=False).backward(torch.from_numpy(g))
    _assert_bitwise(gx, t.grad.numpy(), "avg backward", "section 2.9")
    gx1 = cypool.avg_pool1d_backward(g[0, 0], (1, 3), 3, 1, 1, False, False, None)
    _assert_bitwise(gx1, gx[0, 0], "1d avg backward", "section 2.9 in 1d")


@pytest.mark.parametrize("dtype", FLOATS)
def test_adaptive_output_larger_than_input(dtype):
    """Section 2.10: [3, 1, 2] -> 5 gives [3, 3, 1, 2, 2], indices [0, 0, 1, 2, 2]."""
    y, idx = cypool.adaptive_max_pool1d(np.array([[3, 1, 2]], dtype), 5, return_indices=True)
    assert y.tolist() == [[3, 3, 1, 2, 2]] and idx.tolist() == [[0, 0, 1, 2, 2]]
    assert y.dtype == dtype and idx.dtype == np.int64


# ---------------------------------------------------------------------------
# Windows wholly in the padding (dilation > 1)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("padding", [((1, 1),), 1, (1,)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_all_padding_window_1d(padding, dtype):
    """x of length 1, kernel 2, dilation 2, one pad each side: the one window
    has taps at -1 and 1, both padding.  -inf and index -1 (PyTorch: index 1,
    outside the plane); the backward adds nothing there and does not crash."""
    x = np.array([[5.0]], dtype)
    y, idx = cypool.max_pool1d(x, 2, padding=padding, dilation=2, return_indices=True)
    assert y.shape == (1, 1) and y.dtype == dtype
    assert y[0, 0] == -np.inf and idx[0, 0] == -1
    gx = cypool.max_pool1d_backward(np.array([[3.0]], dtype), idx, x.shape, 2, None, padding, 2)
    assert gx.dtype == dtype and gx.tolist() == [[0.0]]
    # average of no element: 0, whatever the divisor
    for cip, div in ((True, None), (False, None), (True, 3), (False, -2)):
        a = cypool.avg_pool1d(x, 2, None, padding, False, cip, div, dilation=2)
        assert a.tolist() == [[0.0]], (cip, div)
        ga = cypool.avg_pool1d_backward(np.array([[3.0]], dtype), x.shape, 2, None, padding,
                                        False, cip, div, dilation=2)
        assert ga.tolist() == [[0.0]], (cip, div)


def test_all_padding_window_mixed_with_real_windows():
    """2-d, channels last, batched: only the windows that miss the input get
    -1; the others match the reference (and the gradient lands only there)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 1, 4)).astype(np.float32)      # (N, H, W, C), W = 1
    kw = dict(kernel_size=(2, 2), stride=(1, 1), padding=((0, 1), (1, 1)), dilation=(1, 2),
              channels_last=True)
    y, idx = cypool.max_pool2d(x, return_indices=True, **kw)
    ry, ri = reference.fixed_pool(x, (2, 2), "max", 2, return_indices=True,
                                  **{k: v for k, v in kw.items() if k != "kernel_size"})
    assert y.shape == (2, 3, 1, 4)
    _assert_bitwise(y, ry, "values", kw)
    _assert_bitwise(idx, ri, "indices", kw)
    assert np.all(idx == -1) and np.all(y == -np.inf)       # W=1: every window misses
    gx = cypool.max_pool2d_backward(np.ones_like(y), idx, x.shape, **kw)
    assert np.all(gx == 0)
    # now with H windows that partly hit: W = 3, dilation 2, pads (1, 1)
    x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    y, idx = cypool.max_pool2d(x, return_indices=True, **kw)
    ry, ri = reference.fixed_pool(x, (2, 2), "max", 2, return_indices=True,
                                  **{k: v for k, v in kw.items() if k != "kernel_size"})
    _assert_bitwise(y, ry, "values", kw)
    _assert_bitwise(idx, ri, "indices", kw)
    assert not np.any(idx == -1)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.uint64, np.bool_])
def test_all_padding_window_integer_gives_lowest(dtype):
    x = np.ones((2, 1), dtype)                                      # (C, L) with L = 1
    y, idx = cypool.max_pool1d(x, 2, padding=((1, 1),), dilation=2, return_indices=True)
    low = False if dtype is np.bool_ else np.iinfo(dtype).min
    assert y.dtype == np.dtype(dtype)
    assert y.tolist() == [[low], [low]] and idx.tolist() == [[-1], [-1]]


# ---------------------------------------------------------------------------
# "same", "valid" and (before, after) pairs
# ---------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    before = cypool.get_num_threads()
    cypool.set_num_threads(1)
    yield
    cypool.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("op", ["avg", "max"])
def test_same_output_size_is_ceil_size_over_stride(op):
    """TensorFlow's SAME: out = ceil(L / stride) for every L, k, s, d, with the
    odd extra pad after (equal to the explicit pairs)."""
    fn = _fn(op, 1)
    for size, k, s, d in itertools.product(range(1, 16), range(1, 6), range(1, 5),
                                           range(1, 4)):
        x = np.arange(size, dtype=np.float64)[None] * 0.5 - 2
        y = fn(x, k, s, "same", dilation=d) if op == "avg" else fn(x, k, s, "same", d)
        assert y.shape == (1, math.ceil(size / s)), (size, k, s, d, y.shape)
        pads = _tf_same_pads((size,), (k,), (s,), (d,))
        y2 = fn(x, k, s, pads, dilation=d) if op == "avg" else fn(x, k, s, pads, d)
        _assert_bitwise(y, y2, "same vs explicit pairs", (size, k, s, d, pads))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("rank", [2, 3])
def test_same_output_size_multi_dim(rank):
    rng = np.random.default_rng(rank)
    for _ in range(60):
        spatial = tuple(int(v) for v in rng.integers(1, 9, rank))
        k = tuple(int(v) for v in rng.integers(1, 5, rank))
        s = tuple(int(v) for v in rng.integers(1, 4, rank))
        d = tuple(int(v) for v in rng.integers(1, 3, rank))
        x = rng.standard_normal((2,) + spatial + (3,))
        want = (2,) + tuple(math.ceil(a / b) for a, b in zip(spatial, s)) + (3,)
        for op in ("avg", "max"):
            fn = _fn(op, rank)
            y = fn(x, k, s, "same", dilation=d, channels_last=True) if op == "avg" else \
                fn(x, k, s, "same", d, channels_last=True)
            assert y.shape == want, (op, spatial, k, s, d)
            pairs = _tf_same_pads(spatial, k, s, d)
            ry = reference.fixed_pool(x, k, op, rank, stride=s, padding=pairs, dilation=d,
                                      channels_last=True)
            if op == "max":
                _assert_bitwise(y, ry, "same max", (spatial, k, s, d))
            else:
                _assert_near(y, ry, _sum_atol(x.dtype, math.prod(k), np.abs(x).max()),
                             "same avg", (spatial, k, s, d))


def test_same_known_values():
    x = np.array([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    # the extra pad goes after: the last window is [5, pad]
    assert cypool.avg_pool1d(x, 2, 1, "same").tolist() == [[[1.5, 2.5, 3.5, 4.5, 2.5]]]
    assert cypool.avg_pool1d(x, 2, 1, "same", count_include_pad=False).tolist() == \
        [[[1.5, 2.5, 3.5, 4.5, 5.0]]]
    # k=4, s=1: total pad 3 -> (1, 2)
    y, idx = cypool.max_pool1d(-x, 4, 1, "same", return_indices=True)
    assert y.tolist() == [[[-1, -1, -2, -3, -4]]] and idx.tolist() == [[[0, 0, 1, 2, 3]]]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_valid_equals_padding_zero(rank):
    rng = np.random.default_rng(10 + rank)
    for _ in range(40):
        spatial = tuple(int(v) for v in rng.integers(4, 9, rank))
        k = tuple(int(v) for v in rng.integers(1, 4, rank))
        s = tuple(int(v) for v in rng.integers(1, 4, rank))
        d = tuple(int(v) for v in rng.integers(1, 3, rank))
        ceil = bool(rng.random() < 0.5)
        if min(reference.fixed_output_size(a, kk, ss, 0, 0, dd, ceil)
               for a, kk, ss, dd in zip(spatial, k, s, d)) < 1:
            continue
        x = _values(rng, (2, 3) + spatial, "special", np.float32)
        ya = _fn("avg", rank)(x, k, s, "valid", ceil, dilation=d)
        yb = _fn("avg", rank)(x, k, s, 0, ceil, dilation=d)
        _assert_bitwise(ya, yb, "avg valid vs 0", (spatial, k, s, d, ceil))
        ma, ia = _fn("max", rank)(x, k, s, "valid", d, ceil, return_indices=True)
        mb, ib = _fn("max", rank)(x, k, s, 0, d, ceil, return_indices=True)
        _assert_bitwise(ma, mb, "max valid vs 0", (spatial, k, s, d, ceil))
        _assert_bitwise(ia, ib, "idx valid vs 0", (spatial, k, s, d, ceil))
        g = rng.standard_normal(ya.shape).astype(np.float32)
        _assert_bitwise(_bwd("avg", rank)(g, x.shape, k, s, "valid", ceil, dilation=d),
                        _bwd("avg", rank)(g, x.shape, k, s, 0, ceil, dilation=d),
                        "avg backward valid vs 0", (spatial, k, s, d, ceil))
        g = rng.standard_normal(ma.shape).astype(np.float32)
        _assert_bitwise(_bwd("max", rank)(g, ia, x.shape, k, s, "valid", d, ceil),
                        _bwd("max", rank)(g, ib, x.shape, k, s, 0, d, ceil),
                        "max backward valid vs 0", (spatial, k, s, d, ceil))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_symmetric_pairs_equal_int_padding(rank):
    """padding=((p, p), ...) is padding=p, including count_include_pad,
    ceil_mode and divisor_override, forward and backward, both layouts."""
    rng = np.random.default_rng(20 + rank)
    for i in range(40):
        spatial = tuple(int(v) for v in rng.integers(1, 8, rank))
        k = tuple(int(v) for v in rng.integers(1, 5, rank))
        pad = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        s = tuple(int(v) for v in rng.integers(1, 4, rank))
        d = tuple(int(v) for v in rng.integers(1, 3, rank))
        ceil, cip, cl = (bool(v) for v in rng.random(3) < 0.5)
        div = [None, 3, -2][i % 3]
        pairs = tuple((p, p) for p in pad)
        osp = [reference.fixed_output_size(a, kk, ss, p, p, dd, ceil)
               for a, kk, ss, p, dd in zip(spatial, k, s, pad, d)]
        if min(osp) < 1:
            for padding in (pad, pairs):
                with pytest.raises(ValueError):
                    _fn("max", rank)(np.zeros((1,) + spatial), k, s, padding, d, ceil)
            continue
        shape = (2,) + spatial + (3,) if cl else (2, 3) + spatial
        x = _values(rng, shape, "special", np.float64)
        info = (spatial, k, pad, s, d, ceil, cip, div, cl)
        ya = _fn("avg", rank)(x, k, s, pad, ceil, cip, div, dilation=d, channels_last=cl)
        yb = _fn("avg", rank)(x, k, s, pairs, ceil, cip, div, dilation=d, channels_last=cl)
        _assert_bitwise(ya, yb, "avg", info)
        g = rng.standard_normal(ya.shape)
        _assert_bitwise(
            _bwd("avg", rank)(g, x.shape, k, s, pad, ceil, cip, div, dilation=d,
                              channels_last=cl),
            _bwd("avg", rank)(g, x.shape, k, s, pairs, ceil, cip, div, dilation=d,
                              channels_last=cl), "avg backward", info)
        ma, ia = _fn("max", rank)(x, k, s, pad, d, ceil, True, channels_last=cl)
        mb, ib = _fn("max", rank)(x, k, s, pairs, d, ceil, True, channels_last=cl)
        _assert_bitwise(ma, mb, "max", info)
        _assert_bitwise(ia, ib, "indices", info)
        g = rng.standard_normal(ma.shape)
        _assert_bitwise(
            _bwd("max", rank)(g, ia, x.shape, k, s, pad, d, ceil, channels_last=cl),
            _bwd("max", rank)(g, ib, x.shape, k, s, pairs, d, ceil, channels_last=cl),
            "max backward", info)


# ---------------------------------------------------------------------------
# Where PyTorch and cypool part ways, on purpose or not
# ---------------------------------------------------------------------------

def test_avg_pool3d_smaller_than_kernel_accepted():
    """PyTorch's avg_pool3d refuses an input smaller than the kernel even when
    the padding makes the call valid; cypool computes it."""
    x = np.array([1.0, 2.0]).reshape(1, 1, 1, 1, 2)
    with pytest.raises(RuntimeError, match="smaller than kernel size"):
        F.avg_pool3d(torch.from_numpy(x), (1, 1, 3), padding=(0, 0, 1))
    y = cypool.avg_pool3d(x, (1, 1, 3), padding=(0, 0, 1))
    assert y.tolist() == [[[[[1.0]]]]]                       # (0 + 1 + 2) / 3
    y = cypool.avg_pool3d(x, (1, 1, 3), padding=(0, 0, 1), count_include_pad=False)
    assert y.tolist() == [[[[[1.5]]]]]
    gx = cypool.avg_pool3d_backward(np.ones((1, 1, 1, 1, 1)), x.shape, (1, 1, 3), None,
                                    (0, 0, 1), False, True, None)
    np.testing.assert_allclose(gx.reshape(-1), [1 / 3, 1 / 3], rtol=1e-15)
    # ... and matches PyTorch's 2-d kernel on the same plane
    t = F.avg_pool2d(torch.from_numpy(x[0, 0]), (1, 3), padding=(0, 1))
    _assert_bitwise(cypool.avg_pool3d(x, (1, 1, 3), padding=(0, 0, 1))[0, 0], t.numpy(),
                    "3d vs torch 2d", "smaller than kernel")


@pytest.mark.parametrize("call", [
    lambda m: m.max_pool2d(np.ones((1, 1, 2, 2)), 3),                  # output too small
    lambda m: m.avg_pool2d(np.ones((1, 1, 2, 2)), 3),
    lambda m: m.max_pool1d(np.ones((1, 4)), 2, dilation=4),
    lambda m: m.max_pool1d(np.ones((1, 4)), 2, padding=2),             # pad > k/2
    lambda m: m.avg_pool3d(np.ones((1, 4, 4, 4)), 3, padding=2),
    lambda m: m.max_pool2d(np.ones((1, 5, 5)), 3, padding=2, dilation=2),  # > k/2 only
])
def test_torch_refusals_are_value_errors(call):
    with pytest.raises(RuntimeError):
        call(_TorchShim)
    with pytest.raises(ValueError):
        call(cypool)


class _TorchShim:
    """The same calls on torch tensors."""

    @staticmethod
    def _t(x):
        return torch.from_numpy(np.asarray(x))

    max_pool1d = staticmethod(lambda x, *a, **k: F.max_pool1d(_TorchShim._t(x), *a, **k))
    max_pool2d = staticmethod(lambda x, *a, **k: F.max_pool2d(_TorchShim._t(x), *a, **k))
    avg_pool2d = staticmethod(lambda x, *a, **k: F.avg_pool2d(_TorchShim._t(x), *a, **k))
    avg_pool3d = staticmethod(lambda x, *a, **k: F.avg_pool3d(_TorchShim._t(x), *a, **k))


def test_padding_over_half_kernel_as_pairs():
    """k=3, dilation 2, padding 2: PyTorch refuses (pad > k/2 although <= half
    the dilated kernel); cypool's int padding refuses likewise, the explicit
    pairs are accepted and match the reference."""
    x = np.random.default_rng(3).standard_normal((1, 5)).astype(np.float32)
    with pytest.raises(ValueError):
        cypool.max_pool1d(x, 3, 1, 2, 2)
    y, idx = cypool.max_pool1d(x, 3, 1, ((2, 2),), 2, return_indices=True)
    ry, ri = reference.fixed_pool(x, 3, "max", 1, stride=1, padding=((2, 2),), dilation=2,
                                  return_indices=True)
    _assert_bitwise(y, ry, "values", "k=3 d=2 pairs (2, 2)")
    _assert_bitwise(idx, ri, "indices", "k=3 d=2 pairs (2, 2)")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_negative_divisor_zero_window_sum(rank):
    """PyTorch adds ``sum / divisor`` to a zero-filled output
    (``output_data[i] += scalar_t(sum / divide_factor)``), so a window summing
    to zero gives +0.0 even under a negative divisor_override; cypool must
    give the same bits."""
    x = np.array([-0.5, 0.5, 0.0, 0.0], np.float32).reshape((1, 1) + (1,) * (rank - 1) + (4,))
    k = (1,) * (rank - 1) + (2,)
    y = _fn("avg", rank)(x, k, divisor_override=-7)
    if rank == 1:
        t = F.avg_pool2d(torch.from_numpy(x[:, :, None]), (1, 2), divisor_override=-7)[:, :, 0]
    else:
        t = getattr(F, f"avg_pool{rank}d")(torch.from_numpy(x), k, divisor_override=-7)
    assert not np.signbit(t.numpy()).any()                 # PyTorch: +0.0, +0.0
    _assert_bitwise(y, t.numpy(), "avg with divisor_override=-7",
                    f"avg_pool{rank}d(x={x.reshape(-1).tolist()}, kernel_size={k}, "
                    "divisor_override=-7)")
