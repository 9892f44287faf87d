"""cypool: pooling for NumPy and CuPy arrays with exactly PyTorch's results.

Fixed-window, adaptive and global average and max pooling over 1-, 2- and
3-d arrays, forward and backward, computed by compiled Cython/OpenMP
kernels that release the GIL (NumPy) or by CUDA kernels (CuPy arrays and
other ``__cuda_array_interface__`` objects).  Function names, arguments and
results follow ``torch.nn.functional``.

>>> import numpy as np, cypool
>>> x = np.random.default_rng(0).random((8, 64, 56, 56), dtype=np.float32)
>>> cypool.adaptive_avg_pool2d(x, (7, 7)).shape
(8, 64, 7, 7)
"""
import os as _os

try:
    from . import _kernels  # noqa: F401  (fails clearly from a source checkout)
except ImportError as _e:  # pragma: no cover - only hit from a source checkout
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if _os.path.exists(_os.path.join(_here, "..", "setup.py")):
        raise ImportError(
            f"cypool is being imported from its source tree ({_here}), which holds no "
            "compiled kernels.  Install it (python -m pip install .) and run from another "
            "directory, or use `python -P -m cypool` / `pytest` from the checkout.") from _e
    raise

from ._config import get_num_threads, set_num_threads, show_config
from ._dispatch import backend
from ._functions import FUNCTIONS as _FUNCTIONS

globals().update(_FUNCTIONS)

__version__ = "0.1.0"

__all__ = sorted(_FUNCTIONS) + ["backend", "get_num_threads", "set_num_threads",
                                "show_config"]
