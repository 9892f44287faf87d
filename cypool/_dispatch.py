"""Which path a call takes, keyed by array type.

The table maps a backend name to the module and class that identify its
arrays and to the module implementing it.  A module is only looked up in
``sys.modules``: cypool never imports CuPy or Dask to classify an array, so
NumPy users never pay for them.  A backend's implementation module has the
same three entry points as ``cypool._cpu``: ``forward``, ``avg_backward``
and ``max_backward``, each taking a validated plan.

Objects that are not CuPy arrays but expose ``__cuda_array_interface__``
(CUDA torch tensors, Numba device arrays) take the CuPy path too, wrapped
zero-copy by CuPy (imported then, since the caller holds device memory).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

import numpy as np

# name -> (module that defines the array type, type name, implementation module or None)
_TABLE = {
    "cupy": ("cupy", "ndarray", "cypool._gpu"),
    "dask": ("dask.array", "Array", None),
}


def _is(x, module: str, cls: str) -> bool:
    mod = sys.modules.get(module)
    return mod is not None and isinstance(x, getattr(mod, cls))


def backend(x) -> str:
    """The path a cypool call on ``x`` takes: ``"numpy"``, ``"cupy"`` or ``"dask"``.

    CuPy arrays and other device arrays (anything exposing
    ``__cuda_array_interface__``, such as CUDA torch tensors) take ``"cupy"``.

    Examples
    --------
    >>> import numpy as np, cypool
    >>> cypool.backend(np.zeros((1, 2, 3)))
    'numpy'
    >>> cypool.backend([[1.0, 2.0]])
    'numpy'
    """
    for name, (module, cls, _) in _TABLE.items():
        if _is(x, module, cls):
            return name
    if hasattr(x, "__cuda_array_interface__"):
        return "cupy"
    return "numpy"


def implementation(fn: str, *arrays):
    """The implementation module for a call on ``arrays`` (``None`` entries skipped).

    Raises TypeError when the arrays belong to different backends (host and
    device arrays mixed) or to a backend this build cannot run.
    """
    if all(type(a) is np.ndarray or a is None for a in arrays):   # the common case, fast
        from . import _cpu
        return _cpu
    kinds = {backend(a) for a in arrays if a is not None}
    if len(kinds) > 1:
        raise TypeError(f"{fn}(): arrays of different kinds in one call ({', '.join(sorted(kinds))});"
                        " move them to one library first")
    kind = kinds.pop() if kinds else "numpy"
    if kind == "numpy":
        from . import _cpu
        return _cpu
    module = _TABLE[kind][2]
    if module is None:
        raise TypeError(f"{fn}(): {kind} arrays are not supported by this version of cypool; "
                        "convert to NumPy first (dask: .compute())")
    if kind == "cupy" and importlib.util.find_spec("cupy") is None:
        raise TypeError(f"{fn}(): got a device array ({type(arrays[0]).__name__}); pooling "
                        "it needs CuPy: pip install 'cypool[cuda12]' (or 'cypool[cuda13]')")
    return importlib.import_module(module)
