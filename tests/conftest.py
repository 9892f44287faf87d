"""Shared test machinery: the array zoo, layout conversions and tolerances.

With ``--import-mode=importlib`` test modules cannot import each other (or
this file), so everything shared is handed out here: the zoo through
``pytest_generate_tests`` (a test that takes an argument named ``case``,
``int_case`` or ``half_case`` is parametrized over that zoo) and the
helpers through the ``tools`` fixture.

Zoo arrays are stored in the channels-first layout ``(N, C, *spatial)`` (or
``(C, *spatial)`` unbatched); ``tools.to_layout`` gives the channels-last
version.  Every array is generated from one seeded generator, so the suite
is reproducible.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
import pytest

SEED = 20250611

# Bit-exactness is asserted where it holds; elsewhere (sums in another order,
# PyTorch's mean(), the float64 reference) these tolerances apply.  The atol
# covers window means that cancel to ~0, where a relative bound means
# nothing: its size is a few units of roundoff of an O(1) sum of <= ~50 terms.
TOL = {
    np.dtype(np.float16): dict(rtol=1e-3, atol=1e-4),
    np.dtype(np.float32): dict(rtol=1e-5, atol=2e-6),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14),
}


@dataclass(frozen=True)
class Case:
    """One zoo entry: ``x`` in the channels-first layout and an output size."""

    name: str
    rank: int
    x: np.ndarray
    output_size: object
    contiguous: bool = True      # channels-last version made C-contiguous too

    @property
    def id(self) -> str:
        return f"{self.rank}d-{self.x.dtype.str}-{self.name}"

    @property
    def torch_output_size(self):
        """output_size as PyTorch takes it: plain ints, a tuple for a sequence
        (None entries resolved: torch's 1d functions refuse them)."""
        o = self.output_size
        if isinstance(o, (tuple, list)):
            return self.out_spatial()
        return int(o)

    def out_spatial(self) -> tuple:
        sp = self.x.shape[-self.rank:]
        o = self.output_size
        if o is None or np.ndim(o) == 0:
            o = (o,) * self.rank
        return tuple(s if v is None else int(v) for s, v in zip(sp, o))


# Geometries per rank: (name, spatial shape, output_size).
GEOMETRIES = {
    1: [("odd", (7,), 3), ("nondiv", (10,), (4,)), ("up", (3,), 5),
        ("none", (6,), (None,)), ("same", (5,), 5), ("ones", (9,), 1),
        ("size1", (1,), 3), ("npint", (8,), np.int64(3))],
    2: [("odd", (5, 7), (3, 4)), ("nondiv", (10, 9), (4, 2)), ("up", (3, 2), (5, 7)),
        ("none", (6, 5), (None, 2)), ("int", (7, 7), 3), ("ones", (5, 6), 1),
        ("row1", (4, 6), (1, 4)), ("size1", (1, 1), (2, 3)), ("list", (4, 5), [3, 2])],
    3: [("odd", (3, 5, 4), (2, 3, 3)), ("up", (2, 3, 2), (3, 4, 5)),
        ("none", (4, 3, 5), (2, None, 3)), ("int", (5, 4, 3), 2),
        ("ones", (3, 4, 5), (1, 1, 1)), ("mixed1", (4, 4, 4), (1, 3, 1)),
        ("size1", (1, 1, 1), (2, 1, 2))],
}
ODD = {1: ((9,), 4), 2: ((5, 7), (3, 4)), 3: ((3, 5, 4), (2, 3, 3))}


def _values(rng, shape, kind, dtype):
    """Arrays of a given flavour of values."""
    if kind == "normal":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "ties":       # few distinct integer values: many equal maxima
        return rng.integers(-2, 3, shape).astype(dtype)
    if kind == "special":    # ties plus NaN, +inf, -inf sprinkled in
        x = rng.integers(-2, 3, shape).astype(dtype)
        r = rng.random(shape)
        x[r < 0.12] = np.nan
        x[(r >= 0.12) & (r < 0.2)] = np.inf
        x[(r >= 0.2) & (r < 0.3)] = -np.inf
        return x
    if kind == "neginf":     # every window all -inf: index = first element
        return np.full(shape, -np.inf, dtype)
    if kind == "nan":        # every window all NaN: index = last element
        return np.full(shape, np.nan, dtype)
    if kind == "signed0":    # -0.0 and 0.0 tie: the first one wins
        return rng.choice(np.array([0.0, -0.0, -1.0], dtype), size=shape)
    raise ValueError(kind)


def special_floats(rng, shape, dtype):
    """Floats of the awkward kinds, sprinkled: ties (halves), NaN, +inf,
    -inf and -0.0 (the GPU and host-shim sweeps' "special" data)."""
    x = np.round(rng.standard_normal(shape) * 2) / 2
    r = rng.random(shape)
    x[r < 0.08] = np.nan
    x[(r >= 0.08) & (r < 0.13)] = np.inf
    x[(r >= 0.13) & (r < 0.25)] = -np.inf
    x[(r >= 0.25) & (r < 0.3)] = -0.0
    return x.astype(dtype)


def _zoo():
    rng = np.random.default_rng(SEED)
    cases = []
    for rank in (1, 2, 3):
        for dtype in (np.float32, np.float64):
            dt = np.dtype(dtype)
            for name, sp, osize in GEOMETRIES[rank]:
                cases.append(Case(name, rank, _values(rng, (2, 3) + sp, "normal", dt), osize))
            sp, osize = ODD[rank]
            for kind in ("ties", "special", "neginf", "nan", "signed0"):
                cases.append(Case(kind, rank, _values(rng, (2, 3) + sp, kind, dt), osize))
            # Memory layouts: views of bigger arrays, never copied.
            big = _values(rng, (4, 5) + tuple(2 * s for s in sp), "special", dt)
            step = big[::2, 1::2, ..., ::2]
            assert not step.flags.c_contiguous
            cases.append(Case("step-view", rank, step[:, :3], osize, contiguous=False))
            base = _values(rng, (2, 3) + sp, "special", dt)
            neg = base[..., ::-1]
            cases.append(Case("neg-stride", rank, neg, osize, contiguous=False))
            cases.append(Case("neg-batch-chan", rank, base[::-1, ::-1], osize,
                              contiguous=False))
            fort = np.asfortranarray(_values(rng, (2, 3) + sp, "normal", dt))
            cases.append(Case("fortran", rank, fort, osize, contiguous=False))
            swapped = _values(rng, (2, 3) + sp, "special", dt).astype(dt.newbyteorder(">"))
            cases.append(Case("byteswap", rank, swapped, osize))
            cases.append(Case("unbatched", rank, _values(rng, (3,) + sp, "special", dt), osize))
            cases.append(Case("unbatched-up", rank,
                              _values(rng, (2,) + (2,) * rank, "normal", dt), 3))
            cases.append(Case("batch0", rank, _values(rng, (0, 3) + sp, "normal", dt), osize))
            # Batch 1 with many channels: the channel-blocking path.
            many = _values(rng, (1, 40) + (3,) * rank, "special", dt)
            cases.append(Case("batch1-40ch", rank, many, 2))
            # >= 64 small channels-first planes: pooled 32 at a time as the
            # lanes of a transposed block, with tails of 10 and of 1 plane.
            cases.append(Case("planes74", rank, _values(rng, (2, 37) + sp, "special", dt),
                              osize))
            cases.append(Case("planes65", rank, _values(rng, (1, 65) + sp, "normal", dt),
                              osize))
            cases.append(Case("planes64-up", rank,
                              _values(rng, (4, 16) + (2,) * rank, "ties", dt), 3))
    return cases


def _int_zoo():
    """Integer and bool arrays (max pooling runs natively on them)."""
    rng = np.random.default_rng(SEED + 1)
    dtypes = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
              np.int64, np.uint64, np.bool_, np.dtype(">i4"), np.dtype(">u2")]
    cases = []
    for rank in (1, 2, 3):
        sp, osize = ODD[rank]
        for dtype in dtypes:
            dt = np.dtype(dtype)
            shape = (2, 3) + sp
            if dt.kind == "b":
                x = rng.random(shape) < 0.3
                cases.append(Case("bool", rank, x, osize))
                cases.append(Case("all-false", rank, np.zeros(shape, bool), osize))
                continue
            info = np.iinfo(dt)
            x = rng.integers(-3, 4, shape)
            x = np.clip(x, info.min, info.max).astype(dt)    # ties
            cases.append(Case("ties", rank, x, osize))
            # the extremes: all-lowest windows (index = first element) and highest
            ext = np.full(shape, info.min, dt)
            r = rng.random(shape)
            ext[r < 0.2] = info.max
            ext[(r >= 0.2) & (r < 0.3)] = info.min + 1
            cases.append(Case("extremes", rank, ext, osize))
            cases.append(Case("extremes-view", rank, ext[..., ::-1], osize, contiguous=False))
        cases.append(Case("up", rank, rng.integers(0, 256, (2, 2) + (2,) * rank)
                          .astype(np.uint8), 3))
        for dtype in (np.int8, np.uint64, np.bool_):   # the transposed-planes path
            x = rng.integers(-3, 4, (2, 37) + sp)
            x = (x > 0) if dtype is np.bool_ else np.clip(x, 0 if dtype is np.uint64 else -128,
                                                          None).astype(dtype)
            cases.append(Case("planes74", rank, x, osize))
    return cases


def _half_zoo():
    rng = np.random.default_rng(SEED + 2)
    cases = []
    for rank in (1, 2, 3):
        for name, sp, osize in GEOMETRIES[rank][:4]:
            x = (rng.standard_normal((2, 3) + sp) * 10).astype(np.float16)
            cases.append(Case(name, rank, x, osize))
        sp, osize = ODD[rank]
        x = _values(rng, (2, 3) + sp, "special", np.float16)
        cases.append(Case("special", rank, x, osize))
        x = _values(rng, (2, 37) + sp, "special", np.float16)
        cases.append(Case("planes74", rank, x, osize))
        big = (rng.standard_normal((2, 3) + tuple(2 * s for s in sp)) * 1000).astype(np.float16)
        cases.append(Case("large-view", rank, big[..., ::2], osize, contiguous=False))
    return cases


ZOO = _zoo()
INT_ZOO = _int_zoo()
HALF_ZOO = _half_zoo()


def pytest_generate_tests(metafunc):
    taken = {name.strip() for m in metafunc.definition.iter_markers("parametrize")
             for name in (m.args[0].split(",") if isinstance(m.args[0], str) else m.args[0])}
    for arg, zoo in (("case", ZOO), ("int_case", INT_ZOO), ("half_case", HALF_ZOO)):
        if arg in metafunc.fixturenames and arg not in taken:
            metafunc.parametrize(arg, zoo, ids=[c.id for c in zoo])


# ---------------------------------------------------------------------------
# Helpers, handed out as the ``tools`` fixture
# ---------------------------------------------------------------------------

def chan_axis(ndim: int, rank: int) -> int:
    """Channel axis of a channels-first array (batched or not)."""
    return ndim - rank - 1


def to_layout(x: np.ndarray, rank: int, channels_last: bool, contiguous: bool = True):
    """A channels-first array in cypool's requested layout.

    Channels-last arrays are C-contiguous copies when ``contiguous`` (the
    layout a user would really have), else strided ``np.moveaxis`` views.
    """
    if not channels_last:
        return x
    y = np.moveaxis(x, chan_axis(x.ndim, rank), -1)
    return np.ascontiguousarray(y) if contiguous else y


def from_layout(y: np.ndarray, rank: int, channels_last: bool):
    """cypool's result in the given layout, back to channels-first."""
    if not channels_last:
        return y
    return np.moveaxis(y, -1, chan_axis(y.ndim, rank))


def to_torch(x: np.ndarray, rank: int, channels_last: bool = False):
    """A cypool-layout array as the NCHW (contiguous, native byte order)
    torch tensor PyTorch's functions take; it owns its memory."""
    import torch
    nc = from_layout(np.asarray(x), rank, channels_last)
    return torch.from_numpy(np.ascontiguousarray(nc, dtype=nc.dtype.newbyteorder("=")).copy())


def from_torch(t, rank: int, channels_last: bool = False) -> np.ndarray:
    """A torch NCHW result as a NumPy array in cypool's layout."""
    return to_layout(t.detach().numpy(), rank, channels_last)


def assert_close(actual, expected, dtype=None, scale: float = 1.0):
    """Values agree to the dtype's tolerance; NaNs in the same places."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = TOL[np.dtype(dtype if dtype is not None else actual.dtype).newbyteorder("=")]
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=tol["rtol"], atol=tol["atol"] * scale, equal_nan=True)


def assert_identical(actual, expected):
    """Same shape, same dtype, same values bit for bit (NaN payloads aside)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if actual.dtype.kind == "f":
        nan_a, nan_e = np.isnan(actual), np.isnan(expected)
        assert np.array_equal(nan_a, nan_e), "NaN positions differ"
        a, e = actual[~nan_a], expected[~nan_e]
        assert a.tobytes() == e.tobytes(), (
            f"{int(np.count_nonzero(a != e))} of {a.size} values differ, "
            f"max |diff| {np.max(np.abs(a.astype(np.float64) - e), initial=0)}")
    else:
        np.testing.assert_array_equal(actual, expected, strict=True)


def fn(kind: str, rank: int):
    """cypool's public function ``kind`` (e.g. "adaptive_avg") of ``rank``."""
    import cypool
    names = {
        "adaptive_avg": f"adaptive_avg_pool{rank}d",
        "adaptive_max": f"adaptive_max_pool{rank}d",
        "adaptive_avg_backward": f"adaptive_avg_pool{rank}d_backward",
        "adaptive_max_backward": f"adaptive_max_pool{rank}d_backward",
        "global_avg": f"global_avg_pool{rank}d",
        "global_max": f"global_max_pool{rank}d",
    }
    return getattr(cypool, names[kind])


@pytest.fixture(scope="session")
def tools():
    """The shared helpers as one namespace."""
    return types.SimpleNamespace(
        TOL=TOL, chan_axis=chan_axis, to_layout=to_layout, from_layout=from_layout,
        to_torch=to_torch, from_torch=from_torch, assert_close=assert_close,
        assert_identical=assert_identical, fn=fn, special_floats=special_floats)


@pytest.fixture
def rng(request):
    """A generator seeded per test (its node id), so every test is reproducible."""
    import zlib
    return np.random.default_rng([SEED, zlib.crc32(request.node.nodeid.encode())])
