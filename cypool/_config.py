"""Thread control and build information."""
from __future__ import annotations

import operator
import sys

from . import _kernels


def get_num_threads() -> int:
    """Number of OpenMP threads the next cypool call on the CPU will use.

    Resolved at call time, so it follows ``OMP_NUM_THREADS``,
    :func:`set_num_threads` and ``threadpoolctl.threadpool_limits``.
    A build without OpenMP always reports 1.

    Examples
    --------
    >>> import cypool
    >>> cypool.get_num_threads() >= 1
    True
    """
    return _kernels.max_threads()


def set_num_threads(n: int) -> None:
    """Set the number of OpenMP threads of cypool's CPU kernels.

    This sets the OpenMP runtime's thread count of the calling thread
    (``omp_set_num_threads``), the same setting ``threadpoolctl`` changes.
    Other libraries in the process that load the same OpenMP runtime share
    it: PyTorch's CPU wheels use the system's libgomp, so a later
    ``torch.set_num_threads(k)`` sets cypool's count to ``k`` too.

    Parameters
    ----------
    n : int
        At least 1.

    Examples
    --------
    >>> import cypool
    >>> old = cypool.get_num_threads()
    >>> cypool.set_num_threads(1)
    >>> cypool.get_num_threads()
    1
    >>> cypool.set_num_threads(old)
    """
    if isinstance(n, bool):
        raise TypeError(f"set_num_threads(): n must be an integer, got the bool {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"set_num_threads(): n must be an integer, got {n!r}") from None
    if n < 1:
        raise ValueError(f"set_num_threads(): n must be >= 1, got {n}")
    _kernels.set_max_threads(n)


def config() -> dict:
    """Build and run-time facts, as a dict (what :func:`show_config` prints)."""
    import numpy as np

    from . import __version__
    from ._dispatch import _TABLE

    return {
        "cypool": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "openmp": _kernels.openmp_enabled(),
        "threads": get_num_threads(),
        "kernels": _kernels.__file__,
        "backends": ["numpy"] + [k for k, v in _TABLE.items() if v[2] is not None],
    }


def show_config(print_out: bool = True) -> dict:
    """Print (and return) how this cypool was built and what it will use.

    Examples
    --------
    >>> import cypool
    >>> cfg = cypool.show_config(print_out=False)
    >>> sorted(cfg)[:3]
    ['backends', 'cypool', 'kernels']
    """
    cfg = config()
    if print_out:
        for k, v in cfg.items():
            if k == "openmp":
                v = "on" if v else "off (serial kernels)"
            print(f"{k:>9}: {v}")
    return cfg
