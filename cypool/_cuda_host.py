"""The GPU kernels run on the CPU, for testing where there is no GPU.

``build()`` compiles ``cypool_pool.cu`` (the very source the GPU path hands
NVRTC) as C++ for the host, after ``cypool_cuda_host.h``, the shim that
supplies CUDA's thread coordinates and launches a grid serially, with one
``extern "C"`` launcher per name expression of ``cypool._gpu``.
:class:`HostDevice` then stands in for CuPy in ``cypool._gpu``'s
``forward``/``avg_backward``/``max_backward`` (NumPy arrays, a small grid so
that the grid-stride loops wrap), so the tests run the GPU path's own
orchestration and kernels and compare them with the Cython kernels.

>>> from cypool import _cuda_host, _gpu                     # doctest: +SKIP
>>> dev = _cuda_host.HostDevice(_cuda_host.build())
>>> _gpu.forward(plan, x, device=dev)                        # a NumPy result
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

from . import _gpu

SHIM = "cypool_cuda_host.h"
FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-w")

_P, _LL, _D, _I, _U = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_double, ctypes.c_int, \
    ctypes.c_uint

# family -> (C parameters, the kernel call's arguments, ctypes argtypes after
# grid and block); {T} stored type, {A} compute type, {I} index type
FAMILIES = {
    "cp_pool_forward": (
        ("const void *x, void *y, long long *yi, const long long *g, long long total, "
         "double dv, double init, int want"),
        "(const {T} *)x, ({T} *)y, yi, g, ({I})total, dv, ({A})init, want",
        (_P, _P, _P, _P, _LL, _D, _D, _I)),
    "cp_avg_backward": (
        "const void *go, void *gi, const long long *g, long long total, double dv",
        "(const {T} *)go, ({T} *)gi, g, ({I})total, dv",
        (_P, _P, _P, _LL, _D)),
    "cp_max_backward": (
        "const void *go, const long long *idx, void *gi, const long long *g, long long total",
        "(const {T} *)go, idx, ({T} *)gi, g, ({I})total",
        (_P, _P, _P, _P, _LL)),
    "cp_max_check": (
        "const long long *idx, const long long *g, long long total, int *flags",
        "idx, g, ({I})total, flags",
        (_P, _P, _LL, _P)),
    "cp_max_backward_planes": (
        "const void *go, const long long *idx, void *gi, const long long *g, long long planes",
        "(const {T} *)go, idx, ({T} *)gi, g, ({I})planes",
        (_P, _P, _P, _P, _LL)),
}


def translation_unit() -> str:
    """The C++ source: the shim, the kernels and a launcher per name expression."""
    with open(os.path.join(_gpu.source_dir(), SHIM)) as f:
        parts = [f.read(), _gpu.source(), 'extern "C" {']
    for j, name in enumerate(_gpu.name_expressions()):
        family, targs = _gpu.split_name(name)
        params, call, _ = FAMILIES[family]
        t, a = (targs[0], targs[1]) if len(targs) > 1 else ("void", "void")
        call = call.format(T=t, A=a, I=targs[-1])
        parts.append(f"void cp_k{j}(unsigned grid, unsigned block, {params})\n"
                     f"{{ cp_host_launch(grid, block, [&] {{ {name}({call}); }}); }}")
    parts.append("}")
    return "\n".join(parts) + "\n"


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") \
        or shutil.which("clang++")


def build(directory: str | None = None) -> ctypes.CDLL:
    """Compile the host library (cached by source hash in ``directory``,
    default a ``cypool-cuda-host`` folder in the temp dir) and load it."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("cypool: no C++ compiler for the CUDA host shim")
    code = translation_unit()
    tag = hashlib.sha256((code + " ".join(FLAGS) + cxx).encode()).hexdigest()[:16]
    directory = directory or os.path.join(tempfile.gettempdir(), "cypool-cuda-host")
    os.makedirs(directory, exist_ok=True)
    lib = os.path.join(directory, f"cypool_cuda_host_{tag}.so")
    if not os.path.exists(lib):
        src = os.path.join(directory, f"cypool_cuda_host_{tag}.cpp")
        with open(src, "w") as f:
            f.write(code)
        tmp = f"{lib}.{os.getpid()}.tmp"
        out = subprocess.run([cxx, *FLAGS, src, "-o", tmp], capture_output=True, text=True,
                             check=False)
        if out.returncode:
            raise RuntimeError(f"cypool: the CUDA host shim did not compile:\n{out.stderr}")
        os.replace(tmp, lib)
    return ctypes.CDLL(lib)


class HostDevice:
    """A stand-in for CuPy in cypool._gpu: NumPy arrays, kernels launched on
    the CPU by the host library, a fixed small grid (``grid`` blocks of
    ``block`` threads) and, if ``index`` is given, that index type for every
    launch (else the one cypool._gpu.index_type picks)."""

    xp = np

    def __init__(self, lib: ctypes.CDLL, grid: int = 3, block: int = 32,
                 index: str | None = None):
        self.grid, self.block, self.force = grid, block, index
        self.launches = []          # (name, grid, block) of every launch, for the tests
        self._fns = {}
        for j, name in enumerate(_gpu.name_expressions()):
            fn = getattr(lib, f"cp_k{j}")
            fn.argtypes = (_U, _U, *FAMILIES[_gpu.split_name(name)[0]][2])
            fn.restype = None
            self._fns[name] = fn

    def context(self):
        return contextlib.nullcontext()

    def geometry(self, plan):
        return _gpu.geometry(plan)

    def config(self, total: int) -> tuple:
        return self.grid, self.block

    def index(self, sizes, grid: int, block: int) -> str:
        return self.force or _gpu.index_type(sizes, grid, block)

    def launch(self, name: str, grid: int, block: int, args: tuple) -> None:
        conv = []
        for a in args:
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError("cypool: host shim arrays must be C-contiguous")
                conv.append(a.ctypes.data)
            elif isinstance(a, (np.floating, float)):
                conv.append(float(a))
            else:
                conv.append(int(a))
        self.launches.append((name, grid, block))
        self._fns[name](grid, block, *conv)

    def host(self, a) -> np.ndarray:
        return np.asarray(a)
