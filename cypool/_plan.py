"""The argument layer: user arguments in, a small frozen plan out.

Every public function turns its arguments into a :class:`Plan` here, before
any work starts; the CPU path (and later the GPU and Dask paths) consume the
plan and check nothing.  Errors name the function, the argument, the value
given and what is accepted.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

SPATIAL = {1: "(L,)", 2: "(H, W)", 3: "(D, H, W)"}


@dataclass(frozen=True)
class Window:
    """How the windows of one spatial dimension are laid out.

    ``kind`` is ``"adaptive"`` (bins of PyTorch's adaptive pooling) or
    ``"fixed"`` (kernel/stride/padding/dilation windows).
    """

    kind: str
    size: int                  # input extent
    osize: int                 # output extent
    kernel: int = 1
    stride: int = 1
    pad_before: int = 0
    pad_after: int = 0
    dilation: int = 1
    count_include_pad: bool = True

    @property
    def step(self) -> int:
        return self.dilation


@dataclass(frozen=True, eq=False)
class Plan:
    """A validated pooling call, independent of the array library.

    Plans compare and hash by identity: :func:`cached` hands out one plan
    per distinct call, so the CPU path can memoise its kernel arguments on it.

    Shapes come in two forms: the user's (``in_shape``/``out_shape``, in the
    user's layout and batching) and the kernel's (``kshape``/``koshape``),
    always the 5-d ``(N, D, H, W, C)`` block the kernels work on.
    """

    fn: str                    # public name, for messages
    op: str                    # "avg" or "max"
    rank: int                  # 1, 2 or 3 spatial dims
    batched: bool
    channels_last: bool
    n: int
    c: int
    windows: tuple             # one Window per spatial dim
    in_shape: tuple
    out_shape: tuple
    in_dtype: np.dtype         # dtype the caller gave
    compute_dtype: np.dtype    # dtype the kernels run in
    out_dtype: np.dtype        # dtype of the result
    div_mode: int = 0          # see _kernels.DIV_*
    div_value: float = 1.0

    @property
    def in_spatial(self) -> tuple:
        return tuple(w.size for w in self.windows)

    @property
    def out_spatial(self) -> tuple:
        return tuple(w.osize for w in self.windows)

    @property
    def kshape(self) -> tuple:
        sp = (1,) * (3 - self.rank) + self.in_spatial
        return (self.n, *sp, self.c) if self.channels_last else (self.n * self.c, *sp, 1)

    @property
    def koshape(self) -> tuple:
        sp = (1,) * (3 - self.rank) + self.out_spatial
        return (self.n, *sp, self.c) if self.channels_last else (self.n * self.c, *sp, 1)


# ---------------------------------------------------------------------------
# Small validators
# ---------------------------------------------------------------------------

def as_int(value, fn: str, arg: str, *, minimum: int | None = None) -> int:
    """An integer argument (Python or NumPy int, not bool) with an optional lower bound."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}(): {arg} must be an integer, got the bool {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{fn}(): {arg} must be an integer, got {value!r} "
                        f"of type {type(value).__name__}") from None
    if minimum is not None and v < minimum:
        raise ValueError(f"{fn}(): {arg} must be >= {minimum}, got {v}")
    return v


def as_bool(value, fn: str, arg: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{fn}(): {arg} must be True or False, got {value!r}")


def per_dim(value, rank: int, fn: str, arg: str, *, minimum: int | None = None,
            allow_none: bool = False) -> tuple:
    """An int or a tuple of ``rank`` ints (``None`` entries allowed if asked)."""
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            raise ValueError(f"{fn}(): {arg} must be an int or a sequence of {rank} ints, "
                             f"got {value!r} of length {len(value)}")
        items = tuple(value)
    elif allow_none and value is None:
        items = (None,) * rank
    else:
        try:
            return (as_int(value, fn, arg, minimum=minimum),) * rank
        except TypeError:
            raise TypeError(f"{fn}(): {arg} must be an int or a sequence of {rank} ints, "
                            f"got {value!r}") from None
    out = []
    for v in items:
        if v is None and allow_none:
            out.append(None)
            continue
        try:
            out.append(as_int(v, fn, arg, minimum=minimum))
        except TypeError:
            raise TypeError(f"{fn}(): {arg} must be an int or a sequence of {rank} ints"
                            f"{' or None' if allow_none else ''}, got {value!r}") from None
        except ValueError:
            raise ValueError(f"{fn}(): every entry of {arg} must be >= {minimum}, "
                             f"got {value!r}") from None
    return tuple(out)


def layout_name(rank: int, channels_last: bool) -> str:
    sp = ", ".join({1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}[rank])
    return f"(N, {sp}, C) or ({sp}, C)" if channels_last else f"(N, C, {sp}) or (C, {sp})"


def split_shape(shape: tuple, rank: int, channels_last: bool, fn: str, arg: str):
    """(batched, n, c, spatial) of an array shape in the user's layout."""
    nd = len(shape)
    if nd not in (rank + 1, rank + 2):
        raise ValueError(f"{fn}(): {arg} must have {rank + 1} (unbatched) or {rank + 2} "
                         f"(batched) dimensions, {layout_name(rank, channels_last)}, "
                         f"got shape {tuple(shape)}")
    batched = nd == rank + 2
    n = shape[0] if batched else 1
    if channels_last:
        c, spatial = shape[-1], tuple(shape[nd - 1 - rank:nd - 1])
    else:
        c, spatial = shape[nd - 1 - rank], tuple(shape[nd - rank:])
    if any(s == 0 for s in spatial):
        raise ValueError(f"{fn}(): {arg} must have non-empty spatial dimensions "
                         f"{SPATIAL[rank]}, got shape {tuple(shape)}")
    return batched, n, c, spatial


def join_shape(batched: bool, n: int, c: int, spatial: tuple, channels_last: bool) -> tuple:
    lead = (n,) if batched else ()
    return lead + (tuple(spatial) + (c,) if channels_last else (c,) + tuple(spatial))


# ---------------------------------------------------------------------------
# Dtypes
# ---------------------------------------------------------------------------

def resolve_dtypes(dtype: np.dtype, op: str, fn: str, arg: str = "x"):
    """(compute dtype, result dtype) for pooling an array of ``dtype``.

    float32/float64 run natively; float16 runs in float32 and returns float16;
    max pooling runs natively on integers and bool (bool as uint8); average
    pooling of integers or bool returns float64, as ``np.mean`` does.
    """
    dt = np.dtype(dtype)
    kind, size = dt.kind, dt.itemsize
    native = dt.newbyteorder("=")
    if kind == "f" and size in (4, 8):
        return native, native
    if kind == "f" and size == 2:
        return np.dtype(np.float32), np.dtype(np.float16)
    if kind in "iub":
        if op == "max":
            comp = np.dtype(np.uint8) if kind == "b" else native
            return comp, np.dtype(bool) if kind == "b" else native
        return np.dtype(np.float64), np.dtype(np.float64)
    raise TypeError(f"{fn}(): {arg} has dtype {dt}, which cypool does not pool; accepted: "
                    "float16, float32, float64" + (", integer and bool" if op == "max"
                                                   else ", integer and bool (returned as float64)"))


def grad_dtypes(dtype: np.dtype, fn: str, arg: str = "grad_output"):
    """(compute dtype, result dtype) of a gradient: floating point only."""
    dt = np.dtype(dtype)
    if dt.kind == "f" and dt.itemsize in (4, 8):
        native = dt.newbyteorder("=")
        return native, native
    if dt.kind == "f" and dt.itemsize == 2:
        return np.dtype(np.float32), np.dtype(np.float16)
    raise TypeError(f"{fn}(): {arg} must be float16, float32 or float64, got dtype {dt}")


# ---------------------------------------------------------------------------
# Array arguments
# ---------------------------------------------------------------------------

def as_array(x, fn: str, arg: str) -> np.ndarray:
    """``x`` as a NumPy array, refusing object, string and complex data."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"{fn}(): {arg} must be an array, got {type(x).__name__} "
                            f"that NumPy cannot convert ({e})") from None
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{fn}(): {arg} has dtype {x.dtype}, which cypool does not pool; "
                        "accepted: floating, integer and bool arrays")
    return x


def check_out(out, shape: tuple, dtype: np.dtype, fn: str, arg: str = "out",
              kind: tuple = (np.ndarray, "NumPy")) -> None:
    """``out=`` must be an array of ``kind`` (type, name: the call's array
    library) with exactly the result's shape and dtype, and writeable."""
    if not isinstance(out, kind[0]):
        raise TypeError(f"{fn}(): {arg} must be a {kind[1]} array, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{fn}(): {arg} must have shape {tuple(shape)} and dtype {dtype}, "
                         f"got shape {tuple(out.shape)} and dtype {out.dtype}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError(f"{fn}(): {arg} is read-only")


def check_input_shape(input_shape, rank: int, channels_last: bool, fn: str):
    """The ``input_shape`` argument of a backward function, as a tuple of ints."""
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"{fn}(): input_shape must be a tuple of ints, got {input_shape!r}")
    shape = tuple(as_int(s, fn, "input_shape", minimum=0) for s in input_shape)
    split_shape(shape, rank, channels_last, fn, "input_shape")
    return shape


# ---------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------

_PLANS: dict = {}
_PLANS_MAX = 4096


def _sig(v):
    """The types in an argument (nested for sequences): 1, True and 1.0 are
    equal and hash alike, but only some of them are valid arguments."""
    t = type(v)
    if t is tuple or t is list:
        return (t, *map(_sig, v))
    return t


def cached(builder):
    """Memoise a plan builder on its arguments (types included).  Only valid
    calls are stored: a call that raises is validated again next time.
    Arguments that cannot be hashed skip the cache."""
    def wrapper(*args, **kw):
        try:
            key = (builder, args, tuple(map(_sig, args)), tuple(kw.items()),
                   tuple(map(_sig, kw.values())))
            hash(key)
        except TypeError:
            return builder(*args, **kw)
        plan = _PLANS.get(key)
        if plan is None:
            plan = builder(*args, **kw)
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.clear()
            _PLANS[key] = plan
        return plan

    wrapper.__wrapped__ = builder
    wrapper.__doc__ = builder.__doc__
    return wrapper


@cached
def adaptive_plan(fn: str, op: str, rank: int, shape: tuple, dtype, output_size,
                  channels_last: bool, *, arg: str = "x", grad: bool = False) -> Plan:
    """Plan of an adaptive pool of an array of ``shape`` to ``output_size``."""
    channels_last = as_bool(channels_last, fn, "channels_last")
    batched, n, c, spatial = split_shape(shape, rank, channels_last, fn, arg)
    osize = per_dim(output_size, rank, fn, "output_size", minimum=0, allow_none=True)
    osize = tuple(s if o is None else o for s, o in zip(spatial, osize))
    windows = tuple(Window("adaptive", s, o) for s, o in zip(spatial, osize))
    comp, res = grad_dtypes(dtype, fn) if grad else resolve_dtypes(dtype, op, fn, arg)
    return Plan(fn=fn, op=op, rank=rank, batched=batched, channels_last=channels_last,
                n=n, c=c, windows=windows, in_shape=tuple(shape),
                out_shape=join_shape(batched, n, c, osize, channels_last),
                in_dtype=np.dtype(dtype), compute_dtype=comp, out_dtype=res, div_mode=0)


def _padding(padding, rank: int, fn: str, kernel: tuple, stride: tuple, dilation: tuple,
             spatial: tuple):
    """Per-dim (before, after) pads from PyTorch's int/tuple, np.pad-style pairs,
    or the TensorFlow strings "valid" and "same"."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * rank
        if mode == "same":
            pads = []
            for i, k, s, d in zip(spatial, kernel, stride, dilation):
                out = -(-i // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - i, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(f"{fn}(): padding must be an int, a sequence of {rank} ints or of "
                         f"{rank} (before, after) pairs, 'valid' or 'same', got {padding!r}")
    pairs = isinstance(padding, (tuple, list)) and len(padding) == rank and \
        all(isinstance(p, (tuple, list)) for p in padding)
    if pairs:
        out = []
        for p, k, d in zip(padding, kernel, dilation):
            if len(p) != 2:
                raise ValueError(f"{fn}(): padding pairs must be (before, after), got {padding!r}")
            b, a = (as_int(v, fn, "padding") for v in p)
            if b < 0 or a < 0 or max(b, a) > (k - 1) * d:
                raise ValueError(f"{fn}(): each (before, after) padding must lie in "
                                 f"[0, dilation*(kernel_size-1)] = [0, {(k - 1) * d}] so that "
                                 f"every window reaches the input, got {padding!r}")
            out.append((b, a))
        return tuple(out)
    pads = per_dim(padding, rank, fn, "padding")
    for p, k in zip(pads, kernel):
        if p < 0:
            raise ValueError(f"{fn}(): padding must be non-negative, got {padding!r}")
        if p > k // 2:
            raise ValueError(f"{fn}(): padding should be at most half of kernel_size "
                             f"(as PyTorch), got padding={padding!r} and kernel_size="
                             f"{kernel!r}; use (before, after) pairs for other paddings")
    return tuple((p, p) for p in pads)


@cached
def fixed_plan(fn: str, op: str, rank: int, shape: tuple, dtype, kernel_size, stride,
               padding, dilation, ceil_mode, count_include_pad, divisor_override,
               channels_last: bool, *, arg: str = "x", grad: bool = False) -> Plan:
    """Plan of a fixed-window (kernel/stride/padding/dilation) pool."""
    from . import _kernels

    channels_last = as_bool(channels_last, fn, "channels_last")
    ceil_mode = as_bool(ceil_mode, fn, "ceil_mode")
    count_include_pad = as_bool(count_include_pad, fn, "count_include_pad")
    kernel = per_dim(kernel_size, rank, fn, "kernel_size", minimum=1)
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        strides = kernel
    else:
        strides = per_dim(stride, rank, fn, "stride", minimum=1)
    dil = per_dim(dilation, rank, fn, "dilation", minimum=1)
    div_mode, div_value = 1, 1.0
    if divisor_override is not None:
        if op != "avg":
            raise TypeError(f"{fn}(): divisor_override applies to average pooling only")
        div_value = as_int(divisor_override, fn, "divisor_override")
        if div_value == 0:
            raise ValueError(f"{fn}(): divisor_override must not be zero")
        div_mode = 2
    batched, n, c, spatial = split_shape(shape, rank, channels_last, fn, arg)
    pads = _padding(padding, rank, fn, kernel, strides, dil, spatial)
    windows = []
    for i, k, s, (pb, pa), d in zip(spatial, kernel, strides, pads, dil):
        o = _kernels.fixed_out_size(i, k, s, pb, pa, d, ceil_mode)
        if o < 1:
            raise ValueError(f"{fn}(): {arg} of spatial size {spatial} is too small for "
                             f"kernel_size={kernel}, stride={strides}, padding={pads}, "
                             f"dilation={dil}: the output would be empty")
        windows.append(Window("fixed", i, o, k, s, pb, pa, d, count_include_pad))
    comp, res = grad_dtypes(dtype, fn) if grad else resolve_dtypes(dtype, op, fn, arg)
    osize = tuple(w.osize for w in windows)
    return Plan(fn=fn, op=op, rank=rank, batched=batched, channels_last=channels_last,
                n=n, c=c, windows=tuple(windows), in_shape=tuple(shape),
                out_shape=join_shape(batched, n, c, osize, channels_last),
                in_dtype=np.dtype(dtype), compute_dtype=comp, out_dtype=res,
                div_mode=div_mode, div_value=float(div_value))
