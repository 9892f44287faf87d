"""The GPU kernels' logic, run on the CPU through the host shim.

``cypool._cuda_host`` compiles ``src/cypool_pool.cu`` (the source the GPU
path hands NVRTC) for the host with ``src/cypool_cuda_host.h`` and stands in
for CuPy in ``cypool._gpu``, so these tests run the GPU path's own code:
its dtype choices, geometry array, max-backward check and fallback, and
every kernel instantiation, on a small grid (the grid-stride loops wrap).
Each case is compared with the Cython kernels given the same plan:

* forward values bit-identical (the whole-plane average, which the CPU sums
  in a vectorised order, within float32 1e-5 / float64 1e-12 relative), and
  max indices identical;
* backward bit-identical to the CPU (which is PyTorch's bits), and
  bit-identical across repeated runs with other grids and index widths.

Cases: the conformance zoos of conftest.py (adaptive and global pooling,
every odd value, memory layout and batch), both layouts, float16/32/64 and
integer/bool, and a seeded random sweep of fixed windows (padding, stride,
dilation, ceil_mode, count_include_pad, divisor_override) over every dtype.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from cypool import _cpu, _cuda_host, _gpu
from cypool._plan import adaptive_plan, fixed_plan

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

if _cuda_host.compiler() is None:
    pytest.skip("no C++ compiler for the CUDA host shim", allow_module_level=True)

RTOL = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-5,
        np.dtype(np.float64): 1e-12}


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return _cuda_host.build(str(tmp_path_factory.mktemp("cuda-host")))


@pytest.fixture(scope="module")
def dev(lib):
    return _cuda_host.HostDevice(lib, grid=3, block=32)


@pytest.fixture(scope="module")
def others(lib):
    # other launch shapes and the 64-bit index loops: results must not change
    return [_cuda_host.HostDevice(lib, grid=1, block=7),
            _cuda_host.HostDevice(lib, grid=5, block=64, index="long long")]


# ---------------------------------------------------------------------------
# Pieces that need no kernel
# ---------------------------------------------------------------------------

def test_launch_config_covers_and_caps():
    assert _gpu.launch_config(0, 80) == (1, _gpu.BLOCK)
    assert _gpu.launch_config(1, 80) == (1, _gpu.BLOCK)
    assert _gpu.launch_config(_gpu.BLOCK + 1, 80) == (2, _gpu.BLOCK)
    assert _gpu.launch_config(10**9, 80) == (80 * _gpu.BLOCKS_PER_SM, _gpu.BLOCK)
    assert _gpu.launch_config(10**9, 0) == (_gpu.BLOCKS_PER_SM, _gpu.BLOCK)
    assert _gpu.launch_config(1000, 80, block=128) == (8, 128)


def test_index_type_by_array_size():
    grid, block = 2560, 256
    room = 2**31 - 1 - grid * block
    assert _gpu.index_type((10, 20), grid, block) == "int"
    assert _gpu.index_type((room,), grid, block) == "int"
    assert _gpu.index_type((room + 1,), grid, block) == "long long"   # the stride would wrap
    assert _gpu.index_type((5, 2**31), grid, block) == "long long"
    assert _gpu.index_type((), grid, block) == "int"


def test_name_expressions_cover_every_dtype_and_index():
    names = _gpu.name_expressions()
    assert len(names) == len(set(names))
    for index in _gpu.INDEX_TYPES:
        for dt in _gpu.CTYPES:
            assert _gpu.forward_name(dt, True, index) in names
            if dt in _gpu.FLOATS:
                assert _gpu.forward_name(dt, False, index) in names
                assert _gpu.avg_backward_name(dt, index) in names
                assert _gpu.max_backward_name(dt, index) in names
                assert _gpu.max_planes_name(dt, index) in names
        assert _gpu.max_check_name(index) in names


def test_source_inlines_the_window_header():
    src = _gpu.source()
    assert '#include "cypool_window.h"' not in src
    assert "cp_fixed_window" in src and "cp_pool_forward" in src


def test_geometry_layout():
    p = fixed_plan("f", "avg", 2, (2, 3, 9, 11), np.float32, (3, 2), (2, 1), (1, 0), 1,
                   True, False, None, False)
    g = _gpu.geometry(p)
    assert g.dtype == np.int64 and g.shape == (33,)
    assert g[:8].tolist() == [6, 1, 1, 9, 11, 1, *p.out_spatial]
    assert g[8:16].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]            # the unit depth
    assert g[16:24].tolist() == [1, 3, 2, 1, 1, 1, 0, 0]            # H: k3 s2 p1
    assert g[24:32].tolist() == [1, 2, 1, 0, 0, 1, 0, 0]            # W: k2 s1 p0
    assert g[32] == p.div_mode


# ---------------------------------------------------------------------------
# Kernels against the Cython path
# ---------------------------------------------------------------------------

def _values(rng, shape, dtype, special, tools):
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -50), min(info.max, 50), size=shape,
                            endpoint=True).astype(dt)
    if dt == np.bool_:
        return rng.random(shape) < 0.3
    if special:
        return tools.special_floats(rng, shape, dt)     # ties, NaN, +-inf, -0.0
    return rng.standard_normal(shape).astype(dt)


def _shape(rng, rank, channels_last, spatial):
    n, c = int(rng.integers(0, 3)) if rng.random() < 0.1 else int(rng.integers(1, 3)), \
        int(rng.integers(1, 5))
    return (n, *spatial, c) if channels_last else (n, c, *spatial)


def _draw(rng):
    """One random case: (plan maker args, input shape, dtype)."""
    rank = int(rng.integers(1, 4))
    cl = bool(rng.random() < 0.5)
    op = "max" if rng.random() < 0.5 else "avg"
    dtypes = ["float32", "float64", "float16"] + (
        ["int8", "uint8", "int16", "int32", "uint32", "int64", "uint64", "bool"]
        if op == "max" else ["int32", "uint8"])
    dtype = dtypes[int(rng.integers(len(dtypes)))]
    spatial = tuple(int(s) for s in rng.integers(1, 9 if rank == 3 else 13, size=rank))
    shape = _shape(rng, rank, cl, spatial)
    kind = rng.choice(["adaptive", "fixed", "fixed", "global"])
    if kind == "adaptive":
        osize = tuple(int(rng.integers(1, 2 * s + 1)) for s in spatial)
        return dict(kind="adaptive", op=op, rank=rank, cl=cl, osize=osize), shape, dtype
    if kind == "global":
        return dict(kind="adaptive", op=op, rank=rank, cl=cl, osize=(1,) * rank), shape, dtype
    k = tuple(int(rng.integers(1, min(s, 4) + 1)) for s in spatial)
    s = tuple(int(rng.integers(1, 4)) for _ in spatial)
    d = tuple(int(rng.integers(1, 3)) if op == "max" and kk * 2 <= ss else 1
              for kk, ss in zip(k, spatial))
    p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
    return dict(kind="fixed", op=op, rank=rank, cl=cl, k=k, s=s, d=d, p=p,
                ceil=bool(rng.random() < 0.3), cip=bool(rng.random() < 0.5),
                div=int(rng.integers(-3, 8)) or 1 if rng.random() < 0.15 else None), \
        shape, dtype


def _plan(c, shape, dtype, grad=False):
    if c["kind"] == "adaptive":
        return adaptive_plan("f", c["op"], c["rank"], shape, dtype, c["osize"], c["cl"],
                             grad=grad)
    return fixed_plan("f", c["op"], c["rank"], shape, dtype, c["k"], c["s"], c["p"], c["d"],
                      c["ceil"], c["cip"], c["div"], c["cl"], grad=grad)


def _whole_plane_average(plan):
    return plan.op == "avg" and all(w.osize == 1 and w.kind == "adaptive"
                                    for w in plan.windows)


def _same(got, want, what, exact=True):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if want.dtype.kind != "f":
        assert np.array_equal(got, want), what
        return
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN positions"
    if exact:
        assert got[~nan].tobytes() == want[~nan].tobytes(), f"{what}: not bit-identical"
    else:
        np.testing.assert_allclose(got[~nan].astype(np.float64), want[~nan].astype(np.float64),
                                   rtol=RTOL[want.dtype], atol=1e-6, err_msg=what)


def _fails(c, shape, dtype):
    try:
        return _plan(c, shape, dtype) is None
    except (ValueError, TypeError):
        return True


def _check_backward(gplan, g, indices, devices, what):
    # the backward on every launch shape: bit-identical to the Cython kernels
    if indices is None:
        want = _cpu.avg_backward(gplan, g)
        runs = [_gpu.avg_backward(gplan, g, device=d) for d in devices]
    else:
        want = _cpu.max_backward(gplan, g, indices)
        runs = [_gpu.max_backward(gplan, g, indices, device=d) for d in devices]
    for r in runs:
        _same(r, want, what + " backward")


CASES = 1500
CHUNK = 100


@pytest.mark.parametrize("chunk", range(CASES // CHUNK))
def test_host_kernels_match_the_cython_kernels(chunk, dev, others, tools):
    rng = np.random.default_rng(0xC0DA + chunk)
    done = 0
    while done < CHUNK:
        c, shape, dtype = _draw(rng)
        if _fails(c, shape, dtype):
            continue
        done += 1
        plan = _plan(c, shape, dtype)
        x = _values(rng, shape, dtype, bool(rng.random() < 0.5), tools)
        if rng.random() < 0.3 and x.ndim:
            x = np.asfortranarray(x)                      # non-contiguous input
        what = f"chunk {chunk} case {done}: {c} shape {shape} {dtype}"
        keep = x.copy()
        want = _cpu.forward(plan, x, return_indices=plan.op == "max")
        got = _gpu.forward(plan, x, return_indices=plan.op == "max", device=dev)
        assert np.array_equal(x, keep, equal_nan=True), f"{what}: input modified"
        if plan.op == "max":
            _same(got[0], want[0], what + " values")
            _same(got[1], want[1], what + " indices")
            values_only = _gpu.forward(plan, x, device=others[0])
            _same(values_only, want[0], what + " values only")
        else:
            _same(got, want, what, exact=not _whole_plane_average(plan))
        if np.dtype(dtype).kind != "f":
            continue
        # backward: bit-identical to the CPU and to every other launch shape
        gplan = _plan(c, shape, dtype, grad=True)
        g = _values(rng, gplan.out_shape, dtype, False, tools)
        _check_backward(gplan, g, want[1] if plan.op == "max" else None, (dev, *others),
                        what)


LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["NC", "NL"])


def _zoo_run(x, rank, output_size, channels_last, op, dev, others, backward=True):
    # one zoo array through the host shim and the Cython kernels, forward
    # and (float types) backward, every launch shape
    plan = adaptive_plan("f", op, rank, x.shape, x.dtype, output_size, channels_last)
    want = _cpu.forward(plan, x, return_indices=op == "max")
    got = _gpu.forward(plan, x, return_indices=op == "max", device=dev)
    if op == "max":
        _same(got[0], want[0], "values")
        _same(got[1], want[1], "indices")
    else:
        _same(got, want, "averages", exact=not _whole_plane_average(plan))
    if not backward:
        return
    gplan = adaptive_plan("f", op, rank, x.shape, x.dtype, output_size, channels_last,
                          grad=True)
    g = np.random.default_rng(1).standard_normal(gplan.out_shape).astype(gplan.out_dtype)
    _check_backward(gplan, g, want[1] if op == "max" else None, (dev, *others), "zoo")


@LAYOUTS
@pytest.mark.parametrize("op", ["avg", "max"])
def test_conformance_zoo_through_the_host_shim(case, channels_last, op, tools, dev, others):
    x = tools.to_layout(case.x, case.rank, channels_last, case.contiguous)
    _zoo_run(x, case.rank, case.output_size, channels_last, op, dev, others)


@LAYOUTS
@pytest.mark.parametrize("op", ["avg", "max"])
def test_float16_zoo_through_the_host_shim(half_case, channels_last, op, tools, dev, others):
    x = tools.to_layout(half_case.x, half_case.rank, channels_last, half_case.contiguous)
    _zoo_run(x, half_case.rank, half_case.output_size, channels_last, op, dev, others)


@LAYOUTS
def test_integer_zoo_through_the_host_shim(int_case, channels_last, tools, dev, others):
    x = tools.to_layout(int_case.x, int_case.rank, channels_last, int_case.contiguous)
    _zoo_run(x, int_case.rank, int_case.output_size, channels_last, "max", dev, others,
             backward=False)
    _zoo_run(x, int_case.rank, int_case.output_size, channels_last, "avg", dev, others,
             backward=False)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_backward_any_indices_scatters_in_output_order(dtype, channels_last, dev, others,
                                                          tools):
    # indices anywhere in the plane (not the ones the forward chose): the
    # gather cannot see them, so the plane-by-plane scatter runs instead
    rng = np.random.default_rng(7)
    shape = (2, 6, 7, 3) if channels_last else (2, 3, 6, 7)
    plan = fixed_plan("f", "max", 2, shape, dtype, 2, 1, 0, 1, False, True, None,
                      channels_last, grad=True)
    g = _values(rng, plan.out_shape, dtype, False, tools)
    idx = rng.integers(-1, 42, size=plan.out_shape)
    want = _cpu.max_backward(plan, g, idx)
    for d in (dev, *others):
        before = len(d.launches)
        got = _gpu.max_backward(plan, g, idx, device=d)
        _same(got, want, f"{dtype} {channels_last}")
        assert any(n.startswith("cp_max_backward_planes") for n, *_ in d.launches[before:])


def test_max_backward_refuses_indices_out_of_range(dev):
    plan = fixed_plan("f", "max", 2, (1, 1, 4, 4), "float32", 2, 2, 0, 1, False, True, None,
                      False, grad=True)
    g = np.ones(plan.out_shape, np.float32)
    for bad in (16, -2):
        idx = np.zeros(plan.out_shape, np.int64)
        idx[0, 0, 1, 1] = bad
        with pytest.raises(_gpu.BadIndices):
            _gpu.max_backward(plan, g, idx, device=dev)


def test_index_width_is_chosen_per_launch(lib):
    d = _cuda_host.HostDevice(lib, grid=2, block=16)
    plan = adaptive_plan("f", "avg", 2, (1, 2, 5, 5), np.float32, 2, False)
    _gpu.forward(plan, np.ones((1, 2, 5, 5), np.float32), device=d)
    assert d.launches[-1][0] == "cp_pool_forward<float, float, 0, int>"
    wide = _cuda_host.HostDevice(lib, grid=2, block=16, index="long long")
    _gpu.forward(plan, np.ones((1, 2, 5, 5), np.float32), device=wide)
    assert wide.launches[-1][0] == "cp_pool_forward<float, float, 0, long long>"


def test_empty_arrays(dev):
    plan = adaptive_plan("f", "max", 2, (0, 3, 5, 5), np.float32, 2, False)
    v, i = _gpu.forward(plan, np.zeros((0, 3, 5, 5), np.float32), return_indices=True,
                        device=dev)
    assert v.shape == (0, 3, 2, 2) and i.shape == (0, 3, 2, 2)
    gplan = adaptive_plan("f", "avg", 2, (0, 3, 5, 5), np.float32, 2, False, grad=True)
    assert _gpu.avg_backward(gplan, np.zeros((0, 3, 2, 2), np.float32),
                             device=dev).shape == (0, 3, 5, 5)
    assert math.prod(_gpu.max_backward(gplan, np.zeros((0, 3, 2, 2), np.float32),
                                       np.zeros((0, 3, 2, 2), np.int64), device=dev).shape) == 0
