"""Dispatch of device arrays, checked without a GPU.

CuPy arrays and anything exposing ``__cuda_array_interface__`` take the GPU
path (cypool._gpu); host and device arrays mixed in one call raise
TypeError before any work; with CuPy absent a device array gets a TypeError
that says what to install.  (With CuPy and a GPU, tests/test_gpu.py runs the
path itself.)
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import cypool
from cypool import _dispatch

HAVE_CUPY = importlib.util.find_spec("cupy") is not None


class FakeDeviceArray:
    """Looks like a CUDA array to cypool (it is never dereferenced here)."""

    shape = (1, 2, 4, 4)
    dtype = np.dtype(np.float32)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": "<f4", "data": (0, False), "version": 3}


def test_device_arrays_take_the_cupy_path():
    assert cypool.backend(FakeDeviceArray()) == "cupy"
    assert cypool.backend(np.zeros(3)) == "numpy"


@pytest.mark.parametrize("call", [
    lambda d, h: cypool.adaptive_max_pool2d_backward(d, h, (1, 2, 4, 4)),
    lambda d, h: cypool.adaptive_max_pool2d_backward(h, d, (1, 2, 4, 4)),
    lambda d, h: cypool.max_pool2d_backward(d, h, (1, 2, 4, 4), 2),
], ids=["device-grad", "device-indices", "fixed"])
def test_mixing_host_and_device_arrays_is_a_type_error(call):
    host = np.zeros((1, 2, 2, 2), np.int64)
    with pytest.raises(TypeError, match="arrays of different kinds.*cupy.*numpy"):
        call(FakeDeviceArray(), host)


def test_mixed_kinds_are_refused_by_the_dispatcher_itself():
    with pytest.raises(TypeError, match="different kinds"):
        _dispatch.implementation("f", np.zeros(2), FakeDeviceArray())


@pytest.mark.skipif(HAVE_CUPY, reason="CuPy is installed here")
def test_device_array_without_cupy_says_what_to_install():
    with pytest.raises(TypeError, match=r"needs CuPy: pip install 'cypool\[cuda12\]'"):
        cypool.adaptive_avg_pool2d(FakeDeviceArray(), 2)


def test_dask_is_still_refused_clearly():
    assert _dispatch._TABLE["dask"][2] is None
