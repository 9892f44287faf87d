"""The GPU path: runs a validated :class:`~cypool._plan.Plan` on CuPy arrays.

The kernels are ``src/cypool_pool.cu`` (shipped in the wheel as
``cypool/_cuda/``), compiled at run time by CuPy's NVRTC (``RawModule`` with
the name expressions below, memoised per device) with the window arithmetic
of ``cypool_window.h`` inlined: the same header the CPU kernels' tables come
from.  Results are CuPy arrays on the input's device, computed on the current
stream; every kernel is a grid-stride loop with one thread per element and no
atomics, so results (backward sums included) are bit-identical run to run.

Nothing here imports CuPy until a CuPy array (or an object exposing
``__cuda_array_interface__``) is pooled; the pieces that need no GPU
(source, name expressions, geometry, launch configuration, index width) are
what the tests compile with NVRTC and run under the host shim.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np

from ._plan import Plan, Window

# the kernel source and the header it inlines (see source())
SOURCE = "cypool_pool.cu"
HEADER = "cypool_window.h"
# NVRTC options of the run-time compile (CuPy adds the device's -arch): no
# fused multiply-adds, so every operation rounds as on the CPU; the
# tests compile every name expression with these for each of ARCHS
OPTIONS = ("--std=c++14", "--fmad=false")
ARCHS = ("compute_75", "compute_80", "compute_90")
# threads per block, and blocks per multiprocessor at most (grid-stride loops)
BLOCK = 256
BLOCKS_PER_SM = 32
INT32_MAX = 2**31 - 1

# dtype -> (stored C type, compute C type)
CTYPES = {
    "float16": ("cp_half", "float"), "float32": ("float", "float"),
    "float64": ("double", "double"),
    "int8": ("signed char",) * 2, "uint8": ("unsigned char",) * 2,
    "int16": ("short",) * 2, "uint16": ("unsigned short",) * 2,
    "int32": ("int",) * 2, "uint32": ("unsigned int",) * 2,
    "int64": ("long long",) * 2, "uint64": ("unsigned long long",) * 2,
}
FLOATS = ("float16", "float32", "float64")
INDEX_TYPES = ("int", "long long")


def source_dir() -> str:
    """Where the CUDA sources are: ``cypool/_cuda`` in an installed package,
    ``src/`` in a source checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.path.join(here, "_cuda"), os.path.join(os.path.dirname(here), "src")):
        if os.path.exists(os.path.join(d, SOURCE)):
            return d
    raise FileNotFoundError(f"cypool: the CUDA sources ({SOURCE}) are missing from {here}/_cuda")


@functools.lru_cache(maxsize=1)
def source() -> str:
    """The kernel source with ``cypool_window.h`` inlined (NVRTC then needs
    no include path)."""
    d = source_dir()
    with open(os.path.join(d, SOURCE)) as f:
        code = f.read()
    with open(os.path.join(d, HEADER)) as f:
        header = f.read()
    include = f'#include "{HEADER}"'
    if include not in code:
        raise RuntimeError(f"cypool: {SOURCE} no longer includes {HEADER}")
    return code.replace(include, header, 1)


def forward_name(dtype: str, is_max: bool, index: str) -> str:
    t, a = CTYPES[dtype]
    return f"cp_pool_forward<{t}, {a}, {int(is_max)}, {index}>"


def avg_backward_name(dtype: str, index: str) -> str:
    t, a = CTYPES[dtype]
    return f"cp_avg_backward<{t}, {a}, {index}>"


def max_backward_name(dtype: str, index: str) -> str:
    t, a = CTYPES[dtype]
    return f"cp_max_backward<{t}, {a}, {index}>"


def max_check_name(index: str) -> str:
    return f"cp_max_check<{index}>"


def max_planes_name(dtype: str, index: str) -> str:
    # accumulates in its stored type: float16 gradients go through float32
    t, a = CTYPES["float32" if dtype == "float16" else dtype]
    return f"cp_max_backward_planes<{t}, {a}, {index}>"


@functools.lru_cache(maxsize=1)
def name_expressions() -> tuple:
    """Every kernel instantiation the GPU path can launch."""
    names = []
    for index in INDEX_TYPES:
        for dt in CTYPES:
            if dt in FLOATS:
                names.append(forward_name(dt, False, index))
            names.append(forward_name(dt, True, index))
        for dt in FLOATS:
            names.append(avg_backward_name(dt, index))
            names.append(max_backward_name(dt, index))
        names.append(max_check_name(index))
        for dt in ("float32", "float64"):
            names.append(max_planes_name(dt, index))
    return tuple(dict.fromkeys(names))


# each kernel family's parameter types ({T} stored, {A} compute, {I} index)
PARAMS = {
    "cp_pool_forward": "const {T} *, {T} *, long long *, const long long *, {I}, double, {A}, int",
    "cp_avg_backward": "const {T} *, {T} *, const long long *, {I}, double",
    "cp_max_backward": "const {T} *, const long long *, {T} *, const long long *, {I}",
    "cp_max_check": "const long long *, const long long *, {I}, int *",
    "cp_max_backward_planes": "const {T} *, const long long *, {T} *, const long long *, {I}",
}


def split_name(name: str) -> tuple:
    """``"cp_avg_backward<float, float, int>"`` -> (family, [template args])."""
    family, rest = name.split("<", 1)
    return family, [a.strip() for a in rest.rstrip(">").split(",")]


def explicit_instantiations() -> str:
    """``template __global__ ...;`` for every name expression: what a
    compiler without name expressions (``nvcc --ptx``) needs to emit them."""
    lines = []
    for name in name_expressions():
        family, targs = split_name(name)
        t, a = (targs[0], targs[1]) if len(targs) > 1 else ("void", "void")
        params = PARAMS[family].format(T=t, A=a, I=targs[-1])
        lines.append(f"template __global__ void {name}({params});")
    return "\n".join(lines) + "\n"


def launch_config(total: int, sm_count: int, block: int = BLOCK) -> tuple:
    """(grid, block) for a grid-stride loop over ``total`` elements: enough
    blocks to cover them, at most BLOCKS_PER_SM per multiprocessor."""
    blocks = max(1, -(-max(total, 0) // block))
    return min(blocks, max(1, sm_count) * BLOCKS_PER_SM), block


def index_type(sizes, grid: int, block: int) -> str:
    """The element loop's index type: ``"int"`` when every array has fewer
    than 2^31 - 1 elements with room for one more grid stride (the loop
    variable never overflows), else ``"long long"``."""
    return "int" if max(sizes, default=0) + grid * block <= INT32_MAX else "long long"


_UNIT = Window("adaptive", 1, 1)


def geometry(plan: Plan) -> np.ndarray:
    """The kernels' int64 geometry array (layout in cypool_pool.cu)."""
    w3 = (_UNIT,) * (3 - plan.rank) + tuple(plan.windows)
    ks, ko = plan.kshape, plan.koshape
    g = np.zeros(33, dtype=np.int64)
    g[0], g[1] = ks[0], ks[4]
    g[2:5] = ks[1:4]
    g[5:8] = ko[1:4]
    for k, w in enumerate(w3):
        if w.kind == "adaptive":
            g[8 + 8 * k: 16 + 8 * k] = (0, 0, 1, 0, 0, 1, 0, 0)
        else:
            g[8 + 8 * k: 16 + 8 * k] = (1, w.kernel, w.stride, w.pad_before, w.pad_after,
                                        w.dilation, int(w.count_include_pad), 0)
    g[32] = plan.div_mode
    return g


def lowest(dtype: np.dtype):
    """A max pool's starting value, as a scalar of the compute type."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return np.float32(-np.inf) if dt.itemsize <= 4 else np.float64(-np.inf)
    return dt.type(np.iinfo(dt).min)


# ---------------------------------------------------------------------------
# Running on CuPy arrays
# ---------------------------------------------------------------------------

def _cupy():
    import cupy
    return cupy


def out_kind() -> tuple:
    """(array type, name) that ``out=`` must be on this path."""
    return _cupy().ndarray, "CuPy"


def as_device_array(x):
    """``x`` as a CuPy array: CuPy arrays as they are, other objects exposing
    ``__cuda_array_interface__`` (CUDA torch tensors, Numba arrays) zero-copy."""
    cp = _cupy()
    if isinstance(x, cp.ndarray):
        return x
    return cp.asarray(x)


@functools.cache
def _module(device_id: int):
    cp = _cupy()
    with cp.cuda.Device(device_id):
        return cp.RawModule(code=source(), options=OPTIONS, name_expressions=name_expressions())


@functools.cache
def _sm_count(device_id: int) -> int:
    cp = _cupy()
    return cp.cuda.runtime.getDeviceProperties(device_id)["multiProcessorCount"]


@functools.lru_cache(maxsize=1024)
def _device_geometry(plan: Plan, device_id: int):
    cp = _cupy()
    with cp.cuda.Device(device_id):
        return cp.asarray(geometry(plan))


class Device:
    """What the orchestration below needs of a device: its array module,
    a context, the geometry array and a kernel launch.  This one is CuPy's;
    the tests' host shim supplies NumPy arrays and launches the same kernels
    compiled for the CPU, so that they run this very code."""

    def __init__(self, array):
        self.xp = _cupy()
        self.id = array.device.id

    def context(self):
        return self.xp.cuda.Device(self.id)

    def geometry(self, plan: Plan):
        return _device_geometry(plan, self.id)

    def config(self, total: int) -> tuple:
        return launch_config(total, _sm_count(self.id))

    def index(self, sizes, grid: int, block: int) -> str:
        return index_type(sizes, grid, block)

    def launch(self, name: str, grid: int, block: int, args: tuple) -> None:
        _module(self.id).get_function(name)((grid,), (block,), args)

    def host(self, a) -> np.ndarray:
        return a.get()


def _launch(dev, name_of, sizes, total, args):
    # args: arrays and scalars in the kernel's order; a _Total goes in the
    # index type chosen for this launch
    grid, block = dev.config(total)
    index = dev.index(sizes, grid, block)
    itype = np.int32 if index == "int" else np.int64
    dev.launch(name_of(index), grid, block,
               tuple(itype(a) if isinstance(a, _Total) else a for a in args))


class _Total(int):
    """An element count passed in the kernel's index type."""


def _storage(xp, x, dtype: np.dtype):
    """x on the device, C-contiguous, in ``dtype`` (bool as uint8)."""
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    return xp.ascontiguousarray(x, dtype=dtype)


def _kernel_dtype(plan: Plan, dtype: np.dtype) -> np.dtype:
    """The stored type the kernels read: float16 stays float16 (computed in
    float32 inside), integers averaged become float64, bool is uint8."""
    dt = np.dtype(dtype)
    if dt == np.float16:
        return dt
    return plan.compute_dtype


def _deliver(result, out, dtype: np.dtype):
    if result.dtype != dtype:
        # bool maxima come back as the uint8 they were pooled as
        result = result.view(dtype) if dtype == np.bool_ else result.astype(dtype)
    if out is not None:
        out[...] = result
        return out
    return result


def forward(plan: Plan, x, *, return_indices: bool = False, out=None, out_indices=None,
            device=None):
    """Pool ``x`` (a CuPy array) as ``plan`` says; returns values, or (values, indices)."""
    dev = device or Device(x)
    xp = dev.xp
    with dev.context():
        kd = _kernel_dtype(plan, x.dtype)
        xk = _storage(xp, x, kd)
        is_max = plan.op == "max"
        want = is_max and return_indices
        y = xp.empty(plan.out_shape, dtype=kd)
        yi = xp.empty(plan.out_shape if want else (1,), dtype=np.int64)
        if y.size:
            _launch(dev, lambda i: forward_name(kd.name, is_max, i), (xk.size, y.size), y.size,
                    (xk, y, yi, dev.geometry(plan), _Total(y.size), np.float64(plan.div_value),
                     lowest(plan.compute_dtype) if is_max else plan.compute_dtype.type(0),
                     np.int32(want)))
        values = _deliver(y, out, plan.out_dtype)
        if not want:
            return values
        return values, _deliver(yi, out_indices, np.dtype(np.int64))


def avg_backward(plan: Plan, grad_output, *, out=None, device=None):
    """Gradient of the average pool ``plan`` with respect to its input."""
    dev = device or Device(grad_output)
    xp = dev.xp
    with dev.context():
        kd = _kernel_dtype(plan, grad_output.dtype)
        gk = _storage(xp, grad_output, kd)
        gi = xp.empty(plan.in_shape, dtype=kd)
        if gi.size:
            if gk.size == 0:
                gi.fill(0)
            else:
                _launch(dev, lambda i: avg_backward_name(kd.name, i), (gk.size, gi.size),
                        gi.size, (gk, gi, dev.geometry(plan), _Total(gi.size),
                                  np.float64(plan.div_value)))
        return _deliver(gi, out, plan.out_dtype)


class BadIndices(ValueError):
    """An index outside [-1, plane) met by the max-backward check."""


def max_backward(plan: Plan, grad_output, indices, *, out=None, device=None):
    """Gradient of the max pool ``plan``, given the forward call's indices:
    gathered (each input element sums, in output order, the gradients of
    the covering windows that chose it) when every index lies in its own
    window, else scattered plane by plane in output order; either way
    PyTorch's CPU additions, deterministic.  Raises :class:`BadIndices` for
    an index outside ``[-1, plane)``."""
    dev = device or Device(grad_output)
    xp = dev.xp
    with dev.context():
        kd = _kernel_dtype(plan, grad_output.dtype)
        gk = _storage(xp, grad_output, kd)
        ik = xp.ascontiguousarray(indices, dtype=np.int64)
        if gk.size == 0 or math.prod(plan.in_shape) == 0:
            return _deliver(xp.zeros(plan.in_shape, dtype=kd), out, plan.out_dtype)
        geo = dev.geometry(plan)
        flags = xp.zeros(2, dtype=np.int32)
        _launch(dev, max_check_name, (ik.size,), ik.size, (ik, geo, _Total(ik.size), flags))
        outside, bad = (int(v) for v in dev.host(flags))
        if bad:
            raise BadIndices()
        if not outside:
            gi = xp.empty(plan.in_shape, dtype=kd)
            _launch(dev, lambda i: max_backward_name(kd.name, i), (gk.size, gi.size), gi.size,
                    (gk, ik, gi, geo, _Total(gi.size)))
        else:
            acc = np.dtype(np.float32) if kd == np.float16 else kd
            ga = gk.astype(acc, copy=False)
            gi = xp.zeros(plan.in_shape, dtype=acc)
            planes = plan.kshape[0] * plan.kshape[4]
            _launch(dev, lambda i: max_planes_name(acc.name, i), (gi.size, ga.size), planes,
                    (ga, ik, gi, geo, _Total(planes)))
        return _deliver(gi, out, plan.out_dtype)


def device_count() -> int:
    """CUDA devices CuPy can use here (0 without CuPy or a device)."""
    try:
        cp = _cupy()
        return cp.cuda.runtime.getDeviceCount() if cp.is_available() else 0
    except (ImportError, RuntimeError, OSError):   # no CuPy, no driver, no device
        return 0
