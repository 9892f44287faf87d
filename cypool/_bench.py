"""Built-in workloads, the self-check and the benchmark behind ``python -m cypool``.

One registry of workloads (``WORKLOADS``) feeds the benchmark table and the
benchmark scripts in ``bench/``.  Every workload times cypool against the
alternatives a user would otherwise pick, in one process, interleaved
(round-robin, after a warm-up) at the same thread count, and reports
medians and the ratio of each peer's time to cypool's.  The GPU benchmark
(``python -m cypool bench --gpu``) times part of the same registry on CuPy
arrays against torch CUDA, with CUDA events, and reports the bandwidth each
call achieves against a device-to-device copy of as many bytes.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

import cypool
from cypool import _peers, reference


# ---------------------------------------------------------------------------
# Progress bar (stderr, so the table on stdout stays clean)
# ---------------------------------------------------------------------------

class Progress:
    """A one-line progress bar on stderr: ``[#####.....] 3/10 label``."""

    def __init__(self, total: int, title: str, stream=None, width: int = 24):
        self.total, self.title, self.width = max(total, 1), title, width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.tty = getattr(self.stream, "isatty", lambda: False)()

    def step(self, label: str = "") -> None:
        self.done += 1
        fill = self.width * self.done // self.total
        line = f"{self.title} [{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total} {label}"
        if self.tty:
            self.stream.write("\r" + line[:100].ljust(100))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------
# Self-check against the slow reference
# ---------------------------------------------------------------------------

def _check_cases():
    rng = np.random.default_rng(20261122)
    cases = []
    for rank, shape, osize in [(1, (2, 3, 11), 4), (2, (2, 3, 9, 7), (4, 3)),
                               (2, (1, 5, 5, 6), (7, None)), (3, (2, 2, 5, 4, 6), (2, 3, 4))]:
        for cl in (False, True):
            for dtype in (np.float32, np.float64):
                x = rng.standard_normal(shape).astype(dtype)
                x.reshape(-1)[:: 7] = np.round(x.reshape(-1)[:: 7])  # ties
                if cl:
                    x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
                cases.append((rank, x, osize, cl))
    return cases


def self_check(progress: bool = True) -> tuple[int, list[str]]:
    """Compare every adaptive/global function with :mod:`cypool.reference`.

    Returns (number of comparisons, list of failures).
    """
    cases = _check_cases()
    bar = Progress(len(cases), "self-check") if progress else None
    failures, count = [], 0
    for rank, x, osize, cl in cases:
        tol = dict(rtol=1e-5, atol=1e-6) if x.dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
        name = f"{rank}d {x.dtype} {'NHWC' if cl else 'NCHW'} {x.shape}->{osize}"
        avg = getattr(cypool, f"adaptive_avg_pool{rank}d")(x, osize, channels_last=cl)
        v, i = getattr(cypool, f"adaptive_max_pool{rank}d")(x, osize, True, channels_last=cl)
        rv, ri = reference.adaptive_pool(x, osize, "max", rank, channels_last=cl,
                                         return_indices=True)
        g = np.linspace(-1, 1, avg.size).reshape(avg.shape).astype(x.dtype)
        checks = {
            "avg": np.allclose(avg, reference.adaptive_pool(x, osize, "avg", rank,
                                                            channels_last=cl), **tol),
            "max": np.array_equal(v, rv) and np.array_equal(i, ri),
            "avg backward": np.allclose(
                getattr(cypool, f"adaptive_avg_pool{rank}d_backward")(g, x.shape, channels_last=cl),
                reference.adaptive_pool_backward(g, x.shape, "avg", rank, channels_last=cl), **tol),
            "max backward": np.allclose(
                getattr(cypool, f"adaptive_max_pool{rank}d_backward")(g, i, x.shape, channels_last=cl),
                reference.adaptive_pool_backward(g, x.shape, "max", rank, indices=i,
                                                 channels_last=cl), **tol),
            "global avg": np.allclose(
                getattr(cypool, f"global_avg_pool{rank}d")(x, channels_last=cl),
                reference.global_pool(x, "avg", rank, channels_last=cl), **tol),
            "global max": np.array_equal(
                getattr(cypool, f"global_max_pool{rank}d")(x, channels_last=cl),
                reference.global_pool(x, "max", rank, channels_last=cl)),
        }
        for what, ok in checks.items():
            count += 1
            if not ok:
                failures.append(f"{what}: {name}")
        if bar:
            bar.step(name)
    return count, failures


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------

@dataclass
class Workload:
    """A timed operation: cypool's call and each peer's, on the same data."""

    name: str
    shape: tuple
    dtype: str
    direction: str                       # "forward" or "backward"
    layout: str                          # "NCHW" or "NHWC"
    quick: bool                          # part of `python -m cypool`'s short table
    setup: Callable[[], dict]            # builds the data once
    cypool: Callable[[dict], object]
    peers: dict = field(default_factory=dict)   # name -> Callable[[dict], object]; may be absent


def _torch():
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, None
    return torch, F


def _data(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32).astype(dtype)


def _nhwc(x):
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _blocks_divisible(shape, osize):
    return all(s % o == 0 for s, o in zip(shape[2:], osize))


def _numpy_block(x, osize, op):
    """What a NumPy user writes when the sizes divide: reshape and reduce."""
    n, c, h, w = x.shape
    oh, ow = osize
    v = x.reshape(n, c, oh, h // oh, ow, w // ow)
    return v.mean(axis=(3, 5)) if op == "avg" else v.max(axis=(3, 5))


def _adaptive_workloads(shape, osize, op, quick, dtype="float32"):
    torch, F = _torch()
    name = f"adaptive_{op}_pool2d {shape}->{osize}"
    out = []
    for layout in ("NCHW", "NHWC"):
        cl = layout == "NHWC"

        def setup(shape=shape, dtype=dtype, cl=cl):
            x = _data(shape, dtype)
            d = {"x": _nhwc(x) if cl else x, "x_nchw": x}
            y, idx = cypool.adaptive_max_pool2d(d["x"], osize, True, channels_last=cl)
            d["idx"], d["g"] = idx, np.ones_like(y)
            if torch is not None:
                t = torch.from_numpy(x)
                d["t"] = t.contiguous(memory_format=torch.channels_last) if cl else t
                ty, ti = F.adaptive_max_pool2d(d["t"], osize, return_indices=True)
                d["tg"], d["ti"] = torch.ones_like(ty), ti
            return d

        fwd_peers, bwd_peers = {}, {}
        if torch is not None:
            if op == "avg":
                fwd_peers["torch"] = lambda d: F.adaptive_avg_pool2d(d["t"], osize)
                bwd_peers["torch"] = lambda d: torch.ops.aten._adaptive_avg_pool2d_backward(d["tg"], d["t"])
            else:
                fwd_peers["torch"] = lambda d: F.adaptive_max_pool2d(d["t"], osize, return_indices=True)
                bwd_peers["torch"] = lambda d: torch.ops.aten.adaptive_max_pool2d_backward(
                    d["tg"], d["t"], d["ti"])
        if not cl and _blocks_divisible(shape, osize):
            fwd_peers["numpy"] = lambda d: _numpy_block(d["x_nchw"], osize, op)
        fwd_peers.update(_peers.peers("adaptive", op, 2, shape, dtype, layout, "forward",
                                      osize=osize, indices=op == "max"))
        bwd_peers.update(_peers.peers("adaptive", op, 2, shape, dtype, layout, "backward",
                                      osize=osize))
        if op == "avg":
            fwd = lambda d, cl=cl: cypool.adaptive_avg_pool2d(d["x"], osize, channels_last=cl)
            bwd = lambda d, cl=cl: cypool.adaptive_avg_pool2d_backward(d["g"], d["x"].shape,
                                                                       channels_last=cl)
        else:
            fwd = lambda d, cl=cl: cypool.adaptive_max_pool2d(d["x"], osize, True, channels_last=cl)
            bwd = lambda d, cl=cl: cypool.adaptive_max_pool2d_backward(d["g"], d["idx"], d["x"].shape,
                                                                       channels_last=cl)
        out.append(Workload(name, shape, dtype, "forward", layout, quick, setup, fwd, fwd_peers))
        out.append(Workload(name, shape, dtype, "backward", layout, quick and not cl, setup, bwd,
                            bwd_peers))
    return out


def _global_workloads(shape, quick):
    torch, F = _torch()
    name = f"global_avg_pool2d {shape}"
    out = []
    for layout in ("NCHW", "NHWC"):
        cl = layout == "NHWC"

        def setup(cl=cl):
            x = _data(shape)
            d = {"x": _nhwc(x) if cl else x, "x_nchw": x}
            if torch is not None:
                t = torch.from_numpy(x)
                d["t"] = t.contiguous(memory_format=torch.channels_last) if cl else t
            return d

        peers = {"numpy": (lambda d, cl=cl: d["x"].mean(axis=(1, 2) if cl else (2, 3)))}
        peers.update(_peers.peers("global", "avg", 2, shape, "float32", layout, "forward"))
        if torch is not None:
            peers["torch"] = lambda d: F.adaptive_avg_pool2d(d["t"], 1)
        out.append(Workload(name, shape, "float32", "forward", layout, quick,
                            setup, lambda d, cl=cl: cypool.global_avg_pool2d(d["x"], channels_last=cl),
                            peers))
    return out


def _fixed_workloads(shape, op, rank, quick, dtype="float32", **kw):
    """max_pool/avg_pool workloads, forward and backward, both layouts."""
    torch, F = _torch()
    args = ", ".join(f"{k[0] if k != 'count_include_pad' else 'cip'}={v}" for k, v in kw.items())
    name = f"{op}_pool{rank}d {shape} {args}"
    integer = np.dtype(dtype).kind in "iu"
    out = []
    for layout in ("NCHW", "NHWC"):
        cl = layout == "NHWC"
        fwd_c = getattr(cypool, f"{op}_pool{rank}d")
        bwd_c = getattr(cypool, f"{op}_pool{rank}d_backward")

        def setup(cl=cl):
            x = _data(shape, "float32")
            if integer:
                x = (np.abs(x) * 40).astype(dtype)
            d = {"x": np.ascontiguousarray(np.moveaxis(x, 1, -1)) if cl else x, "x_nchw": x}
            if op == "max":
                y, d["idx"] = fwd_c(d["x"], return_indices=True, channels_last=cl, **kw)
            else:
                y = fwd_c(d["x"], channels_last=cl, **kw)
            d["g"] = np.ones(y.shape, np.float32)
            if torch is not None:
                t = torch.from_numpy(x)
                fmt = torch.channels_last if rank == 2 else torch.channels_last_3d
                d["t"] = t.contiguous(memory_format=fmt) if cl and rank > 1 else t
                if not integer:
                    tf = getattr(F, f"{op}_pool{rank}d")
                    if op == "max":
                        ty, d["ti"] = tf(d["t"], return_indices=True, **kw)
                    else:
                        ty = tf(d["t"], **kw)
                    d["tg"] = torch.ones_like(ty)
            return d

        fwd_peers, bwd_peers = {}, {}
        if torch is not None and not (cl and rank == 1):
            tf = getattr(F, f"{op}_pool{rank}d")
            # values and indices, like cypool's call; integer workloads time values
            # only (torch's channels-last kernel keeps uint8 indices in 8 bits and
            # refuses planes past 127 elements)
            extra = {"return_indices": True} if op == "max" and not integer else {}
            fwd_peers["torch"] = lambda d, tf=tf, extra=extra: tf(d["t"], **extra, **kw)
            if not integer:
                k = kw["kernel_size"]
                s = kw.get("stride", k)
                p = kw.get("padding", 0)
                ks, ss, ps = ([v] * rank if np.ndim(v) == 0 else list(v) for v in (k, s, p))
                if op == "max" and rank > 1:
                    aten = getattr(torch.ops.aten, f"max_pool{rank}d_with_indices_backward")
                    bwd_peers["torch"] = lambda d, aten=aten: aten(
                        d["tg"], d["t"], ks, ss, ps, [1] * rank, False, d["ti"])
                elif op == "avg" and rank > 1:
                    aten = getattr(torch.ops.aten, f"avg_pool{rank}d_backward")
                    cip = kw.get("count_include_pad", True)
                    bwd_peers["torch"] = lambda d, aten=aten, cip=cip: aten(
                        d["tg"], d["t"], ks, ss, ps, False, cip, None)
        fwd_peers.update(_peers.peers("fixed", op, rank, shape, dtype, layout, "forward", kw=kw,
                                      indices=op == "max" and not integer))
        if not integer:
            bwd_peers.update(_peers.peers("fixed", op, rank, shape, dtype, layout, "backward",
                                          kw=kw))
        if op == "max":
            fwd = lambda d, cl=cl: fwd_c(d["x"], return_indices=not integer, channels_last=cl,
                                         **kw)
            bwd = lambda d, cl=cl: bwd_c(d["g"], d["idx"], d["x"].shape, channels_last=cl, **kw)
        else:
            fwd = lambda d, cl=cl: fwd_c(d["x"], channels_last=cl, **kw)
            bwd = lambda d, cl=cl: bwd_c(d["g"], d["x"].shape, channels_last=cl, **kw)
        out.append(Workload(name, shape, dtype, "forward", layout, quick and not cl, setup,
                            fwd, fwd_peers))
        if not integer:
            out.append(Workload(name, shape, dtype, "backward", layout, False, setup, bwd,
                                bwd_peers))
    return out


def workloads() -> list[Workload]:
    """The registry: every built-in workload, quick ones first."""
    ws = []
    ws += _adaptive_workloads((32, 64, 112, 112), (7, 7), "avg", quick=True)
    ws += _adaptive_workloads((32, 512, 14, 14), (7, 7), "max", quick=True)
    ws += _global_workloads((64, 2048, 7, 7), quick=True)
    ws += _fixed_workloads((32, 64, 112, 112), "max", 2, True, kernel_size=3, stride=2,
                           padding=1)
    ws += _adaptive_workloads((32, 64, 113, 97), (7, 5), "avg", quick=False)
    ws += _fixed_workloads((32, 256, 56, 56), "avg", 2, False, kernel_size=2, stride=2)
    ws += _fixed_workloads((8, 128, 64, 64), "avg", 2, False, kernel_size=3, stride=1,
                           padding=1, count_include_pad=False)
    ws += _fixed_workloads((4, 32, 32, 64, 64), "max", 3, False, kernel_size=2)
    ws += _fixed_workloads((1, 64, 224, 224), "max", 2, False, kernel_size=3, stride=2,
                           padding=1)
    ws += _fixed_workloads((16, 3, 512, 512), "max", 2, False, dtype="uint8", kernel_size=2)
    ws += _adaptive_workloads((1, 256, 224, 224), (7, 7), "avg", quick=False)
    ws += _adaptive_workloads((16, 64, 112, 112), (7, 7), "avg", quick=False, dtype="float64")
    ws += _adaptive_workloads((1, 64, 7, 7), (1, 1), "avg", quick=False)
    for w in ws:
        if "torch" in w.peers and len(w.shape) > 3:
            w.peers[TORCH_OTHER] = _in_other_layout(w.peers["torch"])
    return ws


TORCH_OTHER = "torch-other"     # torch on the same values in the other memory format


def _in_other_layout(f):
    """torch's call ``f`` on the workload's tensors (input, gradient,
    indices) in the other memory format: channels-last for a channels-first
    row and the reverse, converted once (at the warm-up call) and timed in
    the same rounds as the row, so that cypool on one layout meets torch on
    either in the same state of the caches."""
    def call(d):
        other = d.get("_torch_other")
        if other is None:
            import torch

            other = dict(d)
            for k in ("t", "tg", "ti"):
                if k in d:
                    t = d[k]
                    fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
                    other[k] = (t.contiguous(memory_format=fmt) if t.is_contiguous()
                                else t.contiguous())
            d["_torch_other"] = other
        return f(other)
    return call


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def _time_once(f, d) -> float:
    t0 = time.perf_counter()
    f(d)
    return time.perf_counter() - t0


def _arrays(obj):
    if isinstance(obj, (tuple, list)):
        return [a for o in obj for a in _arrays(o)]
    return [obj] if isinstance(obj, np.ndarray) else []


def _bytes_read(w: Workload, d: dict) -> int:
    """Bytes cypool's call must read: the input (forward), or the output
    gradient and, for max pooling, the indices (backward)."""
    if w.direction == "forward":
        return d["x"].nbytes
    return d["g"].nbytes + (d["idx"].nbytes if "max" in w.name and "idx" in d else 0)


ROOFLINE = "(roofline)"     # the probe's key among the timed calls
ONE_THREAD = "(cypool, 1 thread)"
ROOFLINE_1 = "(roofline, 1 thread)"


def _roofline_probe(n_read: int, n_written: int, threads: int | None = None):
    """A call that reads n_read bytes once and writes n_written bytes (not
    zeros) once at cypool's thread count (or ``threads``): the least any
    pooling kernel can take.  It is timed in the same rounds as cypool and the peers, so that
    it meets the caches in the state they leave (a probe timed on its own
    keeps its input in this machine's large L3 and measures the cache, not
    memory)."""
    from cypool import _kernels

    from cypool._cpu import STREAM_BYTES

    src = np.ones(max(n_read // 4, 1), np.float32)
    dst = np.empty(max(n_written // 4, 1), np.float32)
    # written as the kernels write: streamed past STREAM_BYTES, and never
    # zeros (which this machine's memory writes faster than any result)
    stream = n_written >= STREAM_BYTES
    return lambda d: _kernels.stream_probe(src, dst, threads or cypool.get_num_threads(),
                                           stream)


# Calls a sample may batch: min_time's 50 ms samples down to calls of 2.5 us
# (a cap of 1000 left the tiny rows' samples at 2-4 ms, and cypool's same
# one-thread code timed under both thread settings 0.91-1.07x apart, against
# 0.96-1.03x with samples of 50 ms; the four tiny rows then take 14 s, not 1)
MAX_INNER = 20000


def run_workload(w: Workload, repeat: int, min_time: float = 0.05,
                 scaling: bool = False) -> dict:
    """Median seconds of cypool and each peer, timed round-robin; the memory
    roofline of the same traffic; with ``scaling``, cypool and the roofline
    at one thread too, in the same rounds (so that both thread counts meet
    the machine in the same state)."""
    d = w.setup()
    written = sum(a.nbytes for a in _arrays(w.cypool(d)))
    fns = {"cypool": w.cypool, **w.peers, ROOFLINE: _roofline_probe(_bytes_read(w, d), written)}
    if scaling:
        fns[ONE_THREAD] = w.cypool
        fns[ROOFLINE_1] = _roofline_probe(_bytes_read(w, d), written, threads=1)
    unsupported = _warm_up(fns, d, 1)     # first-touch, caches, lazy init
    one = min(_time_once(f, d) for f in fns.values())
    inner = max(1, min(MAX_INNER, int(min_time / max(one, 1e-7))))  # batch tiny calls
    times = {k: [] for k in fns}
    before = cypool.get_num_threads()
    for _ in range(repeat):
        for k, f in fns.items():
            if k == ONE_THREAD:
                cypool.set_num_threads(1)
            try:
                t0 = time.perf_counter()
                for _ in range(inner):
                    f(d)
                times[k].append((time.perf_counter() - t0) / inner)
            finally:
                if k == ONE_THREAD:
                    cypool.set_num_threads(before)
    med = {k: statistics.median(v) for k, v in times.items()}
    roof = med.pop(ROOFLINE)
    one_t, roof_1 = med.pop(ONE_THREAD, None), med.pop(ROOFLINE_1, None)
    result = {"name": w.name, "direction": w.direction, "layout": w.layout, "dtype": w.dtype,
              "shape": list(w.shape), "threads": cypool.get_num_threads(), "repeat": repeat,
              "median_s": med,
              "speedup": {k: med[k] / med["cypool"] for k in med if k != "cypool"},
              "roofline_s": roof, "roofline_fraction": roof / med["cypool"],
              "unsupported": unsupported}
    if scaling:
        result["cypool_1thread_s"] = one_t
        result["thread_speedup"] = one_t / med["cypool"]
        result["roofline_1thread_s"] = roof_1
        result["roofline_1thread_fraction"] = roof_1 / one_t
    return result


def run(quick: bool = True, repeat: int = 7, progress: bool = True,
        scaling: bool = False, peers: set | None = None) -> list[dict]:
    """Time the (quick or full) workloads at cypool's current thread count."""
    torch, _ = _torch()
    if torch is not None:
        torch.set_num_threads(cypool.get_num_threads())
    ws = [w for w in workloads() if w.quick or not quick]
    if peers is not None:       # only these peers (others, e.g. JAX's spinning threads, stay out)
        for w in ws:
            w.peers = {k: f for k, f in w.peers.items() if k in peers}
    bar = Progress(len(ws), "benchmark") if progress else None
    results = []
    for w in ws:
        results.append(run_workload(w, repeat, scaling=scaling))
        if bar:
            bar.step(f"{w.name} {w.direction} {w.layout}")
    return results


def _warm_up(fns: dict, d, times: int) -> dict:
    """Call each of ``fns`` ``times`` times on ``d``; a peer that refuses the
    case is dropped from ``fns`` and reported (name -> error), not timed."""
    unsupported = {}
    for k, f in list(fns.items()):
        try:
            for _ in range(times):
                f(d)
        except Exception as e:
            if k == "cypool":
                raise
            unsupported[k] = f"{type(e).__name__}: {str(e)[:120]}"
            del fns[k]
    return unsupported


def _torch_geomean(results: list) -> tuple:
    """(geometric-mean speedup over torch, rows it is taken over) of results."""
    speedups = [r["speedup"]["torch"] for r in results if "torch" in r["speedup"]]
    if not speedups:
        return 0.0, 0
    return math.exp(sum(math.log(s) for s in speedups) / len(speedups)), len(speedups)


def _aligned(head: list, rows: list) -> list:
    """Lines of a text table: the first column left-aligned, the rest right."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                for i, (c, w) in enumerate(zip(row, widths)))
    return [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


def table(results: list[dict]) -> str:
    """The results as a fixed-width text table (times in ms, ratios = peer / cypool)."""
    peers = sorted({p for r in results for p in [*r["speedup"], *r.get("unsupported", {})]},
                   key=lambda p: (p != "torch", p))
    scaling = any("thread_speedup" in r for r in results)
    head = ["workload", "dir", "layout", "cypool ms", "roofline"] + \
        (["1-thread ms", "1-thread roofline", "2nd thread"] if scaling else []) + \
        [f"{p} ms" for p in peers] + [f"vs {p}" for p in peers]
    rows = []
    for r in results:
        m = r["median_s"]
        row = [f"{r['name']} {r['dtype']}" if r["dtype"] != "float32" else r["name"],
               {"forward": "fwd", "backward": "bwd"}[r["direction"]], r["layout"],
               f"{m['cypool'] * 1e3:.3f}", f"{100 * r['roofline_fraction']:.0f}%"]
        if scaling:
            row += [f"{r['cypool_1thread_s'] * 1e3:.3f}",
                    f"{100 * r['roofline_1thread_fraction']:.0f}%",
                    f"{r['thread_speedup']:.2f}x"]
        row += [f"{m[p] * 1e3:.3f}" if p in m else
                ("fails" if p in r.get("unsupported", {}) else "-") for p in peers]
        row += [f"{r['speedup'][p]:.2f}x" if p in r["speedup"] else "-" for p in peers]
        rows.append(row)
    lines = _aligned(head, rows)
    lines.append("vs X = X's median time / cypool's (above 1: cypool is faster); "
                 "fails = the peer raises on this case; roofline = time to read the "
                 "inputs and write the outputs once (same threads) / cypool's time"
                 + (f"; {TORCH_OTHER}: torch on the same values in the other memory "
                    "format, timed in the same rounds" if TORCH_OTHER in peers else "")
                 + ("; 1-thread roofline: the same at one thread" if scaling else ""))
    gm, n = _torch_geomean(results)
    if n:
        lines.append(f"geometric-mean speedup over torch: {gm:.2f}x "
                     f"({n} workloads, {results[0]['threads']} threads)")
    return "\n".join(lines)


def chart(results: list[dict], path: str) -> None:
    """A PNG bar chart of cypool's speedup over each peer, per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = sorted({p for r in results for p in r["speedup"]}, key=lambda p: (p != "torch", p))
    labels = [f"{r['name']}{'' if r['dtype'] == 'float32' else ' ' + r['dtype']} "
              f"{'fwd' if r['direction'] == 'forward' else 'bwd'} {r['layout']}" for r in results]
    fig, ax = plt.subplots(figsize=(13, 0.32 * len(results) + 1.5))
    height = 0.8 / max(len(peers), 1)
    for j, p in enumerate(peers):
        ys = [i + j * height for i in range(len(results))]
        vals = [r["speedup"].get(p, np.nan) for r in results]
        ax.barh(ys, vals, height=height, label=f"vs {p}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(results))])
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup of cypool (peer time / cypool time, log scale; > 1: cypool faster)")
    ax.set_title(f"cypool vs peers, {results[0]['threads']} threads")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------
# The GPU benchmark (python -m cypool bench --gpu)
# ---------------------------------------------------------------------------

# Registry workloads timed on the GPU (float32, forward and backward, both
# layouts): the quick set and the fixed-window pools of the full one.
GPU_WORKLOADS = (
    "adaptive_avg_pool2d (32, 64, 112, 112)->(7, 7)",
    "global_avg_pool2d (64, 2048, 7, 7)",
    "adaptive_max_pool2d (32, 512, 14, 14)->(7, 7)",
    "max_pool2d (32, 64, 112, 112) k=3, s=2, p=1",
    "avg_pool2d (32, 256, 56, 56) k=2, s=2",
    "avg_pool2d (8, 128, 64, 64) k=3, s=1, p=1, cip=False",
    "max_pool3d (4, 32, 32, 64, 64) k=2",
)
GPU_MIN_TIME = 0.02         # seconds of device time per timed round: short calls are batched
COPY = "(copy)"             # the copy probe's key among the timed calls


def gpu_unavailable() -> str | None:
    """Why the GPU benchmark cannot run here, or None when it can."""
    import importlib.util

    from cypool import _gpu

    if importlib.util.find_spec("cupy") is None:
        return "CuPy not installed"
    if _gpu.device_count() == 0:
        return "CuPy finds none"
    return None


def _torch_cuda():
    """torch when it is installed and has a CUDA device, else None."""
    torch, _ = _torch()
    return torch if torch is not None and torch.cuda.is_available() else None


def gpu_info() -> dict:
    """The current device and the GPU libraries, for the header and the JSON."""
    import cupy as cp

    dev = cp.cuda.Device().id
    name = cp.cuda.runtime.getDeviceProperties(dev)["name"]
    torch = _torch_cuda()
    return {"device": name.decode() if isinstance(name, bytes) else str(name),
            "device_id": dev, "cupy": cp.__version__,
            "torch_cuda": None if torch is None else torch.version.cuda}


def gpu_workloads() -> list[Workload]:
    """The GPU_WORKLOADS entries of the registry, in that order (per name:
    NCHW forward, NCHW backward, NHWC forward, NHWC backward).

    The registry times no backward of the global average (cypool has no
    global backward function: the gradient is the adaptive one to (1, 1)),
    so that backward is the adaptive workload to (1, 1) under the global name.
    """
    pool = workloads()
    pool += [replace(w, name="global_avg_pool2d (64, 2048, 7, 7)")
             for w in _adaptive_workloads((64, 2048, 7, 7), (1, 1), "avg", quick=False)
             if w.direction == "backward"]
    out = []
    for name in GPU_WORKLOADS:
        group = [w for w in pool if w.name == name and w.dtype == "float32"]
        if not group:       # the registry renamed a workload: say which
            raise KeyError(f"GPU workload {name!r} is not in the registry")
        out += sorted(group, key=lambda w: (w.layout != "NCHW", w.direction != "forward"))
    return out


def _on_gpu(d: dict, cp, torch) -> dict:
    """A workload's data (from its CPU setup) on the current device: NumPy
    arrays as CuPy arrays, torch tensors as CUDA tensors in their memory
    format (dropped when torch has no CUDA); the channels-first copy that
    only the CPU peers read is left behind."""
    g = {}
    for k, v in d.items():
        if k == "x_nchw":
            continue
        if isinstance(v, np.ndarray):
            g[k] = cp.asarray(v)
        elif hasattr(v, "is_cuda"):
            if torch is not None:
                g[k] = v.to("cuda")
        else:
            g[k] = v
    return g


def _device_bytes(obj) -> int:
    """Bytes of the arrays in a result (values, or values and indices)."""
    if isinstance(obj, (tuple, list)):
        return sum(_device_bytes(o) for o in obj)
    return int(getattr(obj, "nbytes", 0))


def _copy_probe(cp, nbytes: int):
    """A device-to-device copy ``y[...] = x`` moving ``nbytes`` in all
    (half read, half written): the traffic of the pooling call it is
    timed with, at the best bandwidth a plain kernel gets on this device
    with the caches in the state the other calls leave them."""
    src = cp.ones(max(nbytes // 8, 1), cp.float32)
    dst = cp.empty_like(src)

    def copy(d):
        dst[...] = src
    return copy


def _event_timer(cp):
    """f(d) run ``inner`` times between two CUDA events on the current
    stream: seconds of device time per call (the host's launch overhead
    included where it starves the device)."""
    start, end = cp.cuda.Event(), cp.cuda.Event()

    def timed(f, d, inner: int) -> float:
        start.record()
        for _ in range(inner):
            f(d)
        end.record()
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) * 1e-3 / inner
    return timed


def gpu_result(w: Workload, median_s: dict, copy_s: float, bytes_read: int,
               bytes_written: int, *, repeat: int, inner: int = 1, unsupported=None,
               device: str = "") -> dict:
    """One row of the GPU table: medians, achieved bandwidth (bytes read and
    written / median time, GB/s), the copy probe's bandwidth on the same
    bytes and cypool's fraction of it, and each peer's time / cypool's."""
    nbytes = bytes_read + bytes_written
    return {"name": w.name, "direction": w.direction, "layout": w.layout, "dtype": w.dtype,
            "shape": list(w.shape), "device": device, "repeat": repeat, "inner": inner,
            "bytes_read": int(bytes_read), "bytes_written": int(bytes_written),
            "median_s": dict(median_s),
            "gbs": {k: nbytes / t / 1e9 for k, t in median_s.items()},
            "copy_s": copy_s, "copy_gbs": nbytes / copy_s / 1e9,
            "copy_fraction": copy_s / median_s["cypool"],
            "speedup": {k: t / median_s["cypool"] for k, t in median_s.items() if k != "cypool"},
            "unsupported": dict(unsupported or {})}


def run_gpu_workload(w: Workload, repeat: int, cp, torch=None,
                     min_time: float = GPU_MIN_TIME, device: str = "") -> dict:
    """Median device seconds of cypool on CuPy arrays, of torch on CUDA
    tensors (when ``torch`` is given) and of the copy probe, timed
    round-robin with CUDA events after a warm-up."""
    d = _on_gpu(w.setup(), cp, torch)
    read, written = _bytes_read(w, d), _device_bytes(w.cypool(d))
    fns = {"cypool": w.cypool}
    if torch is not None and "torch" in w.peers:
        fns["torch"] = w.peers["torch"]
    fns[COPY] = _copy_probe(cp, read + written)
    # warm-up: NVRTC compile, memory pools, torch's heuristics
    unsupported = _warm_up(fns, d, 2)
    timed = _event_timer(cp)
    one = min(timed(f, d, 1) for f in fns.values())
    inner = max(1, min(1000, int(min_time / max(one, 1e-7))))   # batch tiny calls
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            times[k].append(timed(f, d, inner))
    med = {k: statistics.median(v) for k, v in times.items()}
    copy_s = med.pop(COPY)
    return gpu_result(w, med, copy_s, read, written, repeat=repeat, inner=inner,
                      unsupported=unsupported, device=device)


def _free_gpu_memory(cp, torch) -> None:
    # each workload's arrays go back to the driver, so that the next one
    # (and the other library's pool) finds the memory free
    cp.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        torch.cuda.empty_cache()


def run_gpu(repeat: int = 7, progress: bool = True, min_time: float = GPU_MIN_TIME) -> list[dict]:
    """Time GPU_WORKLOADS on the current CUDA device: cypool on CuPy arrays
    against torch CUDA (when available), with the copy bandwidth of each.

    Raises RuntimeError without CuPy or a device (see gpu_unavailable()).
    """
    why = gpu_unavailable()
    if why is not None:
        raise RuntimeError(f"bench --gpu: no CUDA device ({why})")
    import cupy as cp

    torch = _torch_cuda()
    device = gpu_info()["device"]
    ws = gpu_workloads()
    bar = Progress(len(ws), "GPU benchmark") if progress else None
    results = []
    for w in ws:
        results.append(run_gpu_workload(w, repeat, cp, torch, min_time, device))
        _free_gpu_memory(cp, torch)
        if bar:
            bar.step(f"{w.name} {w.direction} {w.layout}")
    return results


def table_gpu(results: list[dict]) -> str:
    """The GPU results as a fixed-width text table: times in ms, bandwidth in
    GB/s, cypool's share of the copy bandwidth, ratios = peer / cypool."""
    peers = sorted({p for r in results for p in [*r["speedup"], *r.get("unsupported", {})]},
                   key=lambda p: (p != "torch", p))
    head = ["workload", "dir", "layout", "cypool ms", "GB/s", "of copy"] + \
        [f"{p} {u}" for p in peers for u in ("ms", "GB/s")] + [f"vs {p}" for p in peers]
    rows = []
    for r in results:
        m, bw = r["median_s"], r["gbs"]
        row = [f"{r['name']} {r['dtype']}" if r["dtype"] != "float32" else r["name"],
               {"forward": "fwd", "backward": "bwd"}[r["direction"]], r["layout"],
               f"{m['cypool'] * 1e3:.3f}", f"{bw['cypool']:.0f}",
               f"{100 * r['copy_fraction']:.0f}%"]
        for p in peers:
            if p in m:
                row += [f"{m[p] * 1e3:.3f}", f"{bw[p]:.0f}"]
            else:
                row += ["fails" if p in r.get("unsupported", {}) else "-", "-"]
        row += [f"{r['speedup'][p]:.2f}x" if p in r["speedup"] else "-" for p in peers]
        rows.append(row)
    lines = _aligned(head, rows)
    lines.append("GB/s = (bytes read + bytes written) / median time (CUDA events); of copy = "
                 "cypool's GB/s / a device-to-device copy's (y[...] = x) of as many bytes, "
                 "timed in the same rounds; vs X = X's time / cypool's (above 1: cypool is "
                 "faster); fails = the peer raises on this case")
    if results:
        copies = [r["copy_gbs"] for r in results]
        device = results[0].get("device") or "this device"
        lines.append(f"device-to-device copy on {device}: {min(copies):.0f} to "
                     f"{max(copies):.0f} GB/s by workload (the smaller ones may stay in the "
                     "L2 cache)")
    gm, n = _torch_geomean(results)
    if n:
        lines.append(f"geometric-mean speedup over torch CUDA: {gm:.2f}x ({n} workloads)")
    elif results:
        lines.append("torch CUDA not available: cypool timed alone")
    return "\n".join(lines)
