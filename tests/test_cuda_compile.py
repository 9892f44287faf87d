"""Every GPU kernel compiles, for every target architecture, without a GPU.

NVRTC (the library CuPy compiles with at run time; here the
``nvidia-cuda-nvrtc-cu12`` wheel found through ``cuda-pathfinder``, or a
system CUDA) compiles ``cypool._gpu.source()`` with the run-time path's
options and name expressions for compute_75, 80 and 90; ``nvcc --ptx``,
where a CUDA toolkit is installed, compiles the same source with explicit
instantiations.  Each must emit every kernel the GPU path can launch.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from cypool import _gpu, _nvrtc


def _entries(ptx: str) -> set:
    return set(re.findall(r"\.entry\s+([A-Za-z0-9_]+)", ptx))


@pytest.mark.parametrize("arch", _gpu.ARCHS)
def test_nvrtc_compiles_every_kernel(arch):
    if _nvrtc.library() is None:
        pytest.skip("no NVRTC library (pip install nvidia-cuda-nvrtc-cu12 cuda-pathfinder)")
    names = _gpu.name_expressions()
    ptx, lowered = _nvrtc.compile_ptx(_gpu.source(), _gpu.OPTIONS, names, arch)
    assert f".target sm_{arch.split('_')[1]}" in ptx
    assert set(lowered) == set(names)
    assert set(lowered.values()) <= _entries(ptx)
    assert len(set(lowered.values())) == len(names)


def test_nvrtc_reports_a_broken_source():
    if _nvrtc.library() is None:
        pytest.skip("no NVRTC library")
    with pytest.raises(_nvrtc.NVRTCError, match="could not compile"):
        _nvrtc.compile_ptx(_gpu.source() + "\nthis is not C++;\n", _gpu.OPTIONS,
                           _gpu.name_expressions()[:1], _gpu.ARCHS[0])


@pytest.mark.parametrize("arch", _gpu.ARCHS)
def test_nvcc_ptx_compiles_every_kernel(arch, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc here")
    src = tmp_path / "cypool_pool_all.cu"
    src.write_text(_gpu.source() + "\n" + _gpu.explicit_instantiations())
    out = tmp_path / "cypool_pool.ptx"
    run = subprocess.run([nvcc, "--ptx", f"-arch={arch}", *_gpu.OPTIONS, str(src), "-o",
                          str(out)], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    ptx = out.read_text()
    assert f".target sm_{arch.split('_')[1]}" in ptx
    assert len(_entries(ptx)) == len(_gpu.name_expressions())
