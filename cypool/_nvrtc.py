"""Compile the GPU kernels with NVRTC, without CuPy and without a GPU.

This is how the CUDA path is verified on machines with no device: the same
source, options and name expressions as the run-time path (cypool._gpu),
compiled to PTX for each target architecture by the NVRTC library, found
through ``cuda-pathfinder`` (the ``nvidia-cuda-nvrtc-cu12`` wheel) or on the
system (a CUDA toolkit's ``libnvrtc.so``).

>>> from cypool import _nvrtc, _gpu                       # doctest: +SKIP
>>> ptx, lowered = _nvrtc.compile_ptx(_gpu.source(), _gpu.OPTIONS,
...                                   _gpu.name_expressions(), "compute_80")
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


class NVRTCError(RuntimeError):
    """NVRTC refused the source; the message holds its log."""


@functools.lru_cache(maxsize=1)
def library():
    """The NVRTC shared library (ctypes), or None when there is none."""
    try:
        from cuda import pathfinder
        return ctypes.CDLL(pathfinder.load_nvidia_dynamic_lib("nvrtc").abs_path)
    except (ImportError, OSError, RuntimeError):
        pass    # no wheel: try the system's library
    for name in ("nvrtc", "nvrtc.so.13", "nvrtc.so.12"):
        path = ctypes.util.find_library(name)
        if path:
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    for path in ("/usr/local/cuda/lib64/libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def version() -> tuple:
    lib = library()
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return major.value, minor.value


def _check(lib, status, what):
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise NVRTCError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")


def compile_ptx(source: str, options, name_expressions, arch: str) -> tuple:
    """PTX for ``arch`` (e.g. ``"compute_80"``) and, for each name
    expression, its lowered (mangled) kernel name.  Raises NVRTCError with
    NVRTC's log when the source does not compile."""
    lib = library()
    if lib is None:
        raise NVRTCError("no NVRTC library (pip install nvidia-cuda-nvrtc-cu12 cuda-pathfinder)")
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"cypool_pool.cu",
                                       0, None, None), "nvrtcCreateProgram")
    try:
        for name in name_expressions:
            _check(lib, lib.nvrtcAddNameExpression(prog, name.encode()), name)
        opts = [o.encode() for o in (*options, f"--gpu-architecture={arch}")]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        status = lib.nvrtcCompileProgram(prog, len(opts), arr)
        if status != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise NVRTCError(f"NVRTC could not compile the kernels for {arch}:\n"
                             + log.value.decode(errors="replace"))
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        lowered = {}
        for name in name_expressions:
            out = ctypes.c_char_p()
            _check(lib, lib.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)), name)
            lowered[name] = out.value.decode()
        return ptx.value.decode(), lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
