"""The pooling a user outside PyTorch would otherwise reach for, as benchmark peers.

ONNX Runtime's CPU provider (a one-node model per workload), JAX on the CPU
(``lax.reduce_window`` under ``jit``, backward through ``jax.vjp``) and
scikit-image's ``block_reduce``; each is used only when it is installed and
can express the workload.  Every peer is a callable on the benchmark's data
dict ``d`` (``d["x"]`` in the workload's layout, ``d["x_nchw"]`` channels-first,
``d["g"]`` the output gradient in the layout).
"""
from __future__ import annotations

import importlib.util
import math

import numpy as np


def available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def window_spec(kind: str, rank: int, shape_nchw: tuple, osize=None, kw=None):
    """(kernel, stride, pads, count_include_pad) of a workload, or None when
    its windows are not fixed ones (adaptive bins of non-dividing sizes)."""
    spatial = shape_nchw[2:]
    if kind in ("adaptive", "global"):
        osize = (1,) * rank if kind == "global" else tuple(osize)
        if any(i % o for i, o in zip(spatial, osize)):
            return None
        k = tuple(i // o for i, o in zip(spatial, osize))
        return k, k, ((0, 0),) * rank, True
    k = kw["kernel_size"]
    k = (k,) * rank if np.ndim(k) == 0 else tuple(k)
    s = kw.get("stride") or k
    s = (s,) * rank if np.ndim(s) == 0 else tuple(s)
    p = kw.get("padding", 0)
    p = (p,) * rank if np.ndim(p) == 0 else tuple(p)
    return k, s, tuple((q, q) for q in p), kw.get("count_include_pad", True)


def _onnx_peer(op, spec, shape, dtype, glob, indices=False):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    import cypool

    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
            "uint8": TensorProto.UINT8}.get(np.dtype(dtype).name)
    if elem is None or (op == "avg" and elem == TensorProto.UINT8):
        return None
    k, s, pads, cip = spec
    if glob:
        node = helper.make_node("GlobalAveragePool" if op == "avg" else "GlobalMaxPool",
                                ["X"], ["Y"])
    else:
        attrs = dict(kernel_shape=list(k), strides=list(s),
                     pads=[p[0] for p in pads] + [p[1] for p in pads])
        if op == "avg":
            attrs["count_include_pad"] = int(cip)
        # max pooling timed with indices (as cypool's and torch's calls are)
        # asks for MaxPool's optional Indices output too
        outputs = ["Y", "Indices"] if op == "max" and indices else ["Y"]
        node = helper.make_node("AveragePool" if op == "avg" else "MaxPool", ["X"], outputs,
                                **attrs)
    infos = [helper.make_tensor_value_info("Y", elem, None)]
    if not glob and op == "max" and indices:
        infos.append(helper.make_tensor_value_info("Indices", TensorProto.INT64, None))
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("X", elem, shape)],
                              infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    state = {}

    def run(d):
        if "sess" not in state:      # built at the thread count of the run
            so = ort.SessionOptions()
            so.intra_op_num_threads = cypool.get_num_threads()
            so.inter_op_num_threads = 1
            # its idle workers would otherwise spin and steal the cores from
            # whichever library is timed next in the interleaved rounds
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            state["sess"] = ort.InferenceSession(model.SerializeToString(), so,
                                                 providers=["CPUExecutionProvider"])
        return state["sess"].run(None, {"X": d["x_nchw"]})

    return run


def _jax_fns(op, spec, layout, rank):
    import jax

    jax.config.update("jax_enable_x64", True)      # float64 workloads stay float64
    import jax.numpy as jnp
    from jax import lax

    k, s, pads, cip = spec
    if layout == "NCHW":
        dims, strides, padding = (1, 1) + k, (1, 1) + s, ((0, 0), (0, 0)) + pads
    else:
        dims, strides, padding = (1,) + k + (1,), (1,) + s + (1,), ((0, 0),) + pads + ((0, 0),)

    if op == "max":
        def f(x):
            return lax.reduce_window(x, -jnp.inf, lax.max, dims, strides, padding)
    elif cip:
        def f(x):
            return lax.reduce_window(x, 0.0, lax.add, dims, strides, padding) / math.prod(k)
    else:
        def f(x):
            ones = jnp.ones(x.shape, x.dtype)
            count = lax.reduce_window(ones, 0.0, lax.add, dims, strides, padding)
            return lax.reduce_window(x, 0.0, lax.add, dims, strides, padding) / count
    fwd = jax.jit(f)
    bwd = jax.jit(lambda x, g: jax.vjp(f, x)[1](g)[0])
    return fwd, bwd


def _jax_data(d):
    import jax.numpy as jnp

    if "jx" not in d:
        d["jx"] = jnp.asarray(d["x"])
    return d["jx"]


def peers(kind: str, op: str, rank: int, shape_nchw: tuple, dtype: str, layout: str,
          direction: str, osize=None, kw=None, indices: bool = False) -> dict:
    """Name -> callable for every installed peer that can run this workload.

    ``indices``: the workload times max pooling with indices; ONNX Runtime
    then computes its MaxPool Indices output too (JAX and scikit-image have
    none: they compute values only)."""
    spec = window_spec(kind, rank, shape_nchw, osize, kw)
    out = {}
    if spec is None:
        return out
    floating = np.dtype(dtype).kind == "f"
    if direction == "forward" and layout == "NCHW" and available("onnxruntime") \
            and available("onnx"):
        p = _onnx_peer(op, spec, shape_nchw, dtype, kind == "global", indices)
        if p is not None:
            out["onnxruntime"] = p
    if available("jax") and floating:
        try:
            fwd, bwd = _jax_fns(op, spec, layout, rank)
        except Exception:      # pragma: no cover - a JAX that cannot build this
            fwd = None
        if fwd is not None and direction == "forward":
            out["jax"] = lambda d: fwd(_jax_data(d)).block_until_ready()
        elif fwd is not None:
            def jax_bwd(d):
                if "jg" not in d:
                    d["jg"] = fwd(_jax_data(d)) * 0 + 1
                return bwd(_jax_data(d), d["jg"]).block_until_ready()
            out["jax"] = jax_bwd
    k, s, pads, _ = spec
    if (direction == "forward" and layout == "NCHW" and available("skimage") and k == s
            and all(p == (0, 0) for p in pads)
            and all(i % kk == 0 for i, kk in zip(shape_nchw[2:], k))):
        from skimage.measure import block_reduce

        fn = np.mean if op == "avg" else np.max
        out["skimage"] = lambda d: block_reduce(d["x_nchw"], (1, 1) + k, fn)
    return out
