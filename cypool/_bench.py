"""Built-in workloads, the self-check and the benchmark behind ``python -m cypool``.

One registry of workloads (``WORKLOADS``) feeds the benchmark table and the
benchmark scripts in ``bench/``.  Every workload times cypool against the
alternatives a user would otherwise pick, in one process, interleaved
(round-robin, after a warm-up) at the same thread count, and reports
medians and the ratio of each peer's time to cypool's.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import cypool
from cypool import reference


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
            d = {"x": _nhwc(x) if cl else x}
            if torch is not None:
                t = torch.from_numpy(x)
                d["t"] = t.contiguous(memory_format=torch.channels_last) if cl else t
            return d

        peers = {"numpy": (lambda d, cl=cl: d["x"].mean(axis=(1, 2) if cl else (2, 3)))}
        if torch is not None:
            peers["torch"] = lambda d: F.adaptive_avg_pool2d(d["t"], 1)
        out.append(Workload(name, shape, "float32", "forward", layout, quick,
                            setup, lambda d, cl=cl: cypool.global_avg_pool2d(d["x"], channels_last=cl),
                            peers))
    return out


def workloads() -> list[Workload]:
    """The registry: every built-in workload, quick ones first."""
    ws = []
    ws += _adaptive_workloads((32, 64, 112, 112), (7, 7), "avg", quick=True)
    ws += _adaptive_workloads((32, 512, 14, 14), (7, 7), "max", quick=True)
    ws += _global_workloads((64, 2048, 7, 7), quick=True)
    ws += _adaptive_workloads((32, 64, 113, 97), (7, 5), "avg", quick=False)
    ws += _adaptive_workloads((1, 256, 224, 224), (7, 7), "avg", quick=False)
    ws += _adaptive_workloads((16, 64, 112, 112), (7, 7), "avg", quick=False, dtype="float64")
    ws += _adaptive_workloads((1, 64, 7, 7), (1, 1), "avg", quick=False)
    return ws


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def _time_once(f, d) -> float:
    t0 = time.perf_counter()
    f(d)
    return time.perf_counter() - t0


def run_workload(w: Workload, repeat: int, min_time: float = 0.05) -> dict:
    """Median seconds of cypool and each peer, timed round-robin."""
    d = w.setup()
    fns = {"cypool": w.cypool, **w.peers}
    for f in fns.values():          # warm-up (first-touch, caches, lazy init)
        f(d)
    one = min(_time_once(f, d) for f in fns.values())
    inner = max(1, min(1000, int(min_time / max(one, 1e-7))))  # batch tiny calls
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f(d)
            times[k].append((time.perf_counter() - t0) / inner)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"name": w.name, "direction": w.direction, "layout": w.layout, "dtype": w.dtype,
            "shape": list(w.shape), "threads": cypool.get_num_threads(), "repeat": repeat,
            "median_s": med,
            "speedup": {k: med[k] / med["cypool"] for k in med if k != "cypool"}}


def run(quick: bool = True, repeat: int = 7, progress: bool = True) -> list[dict]:
    """Time the (quick or full) workloads at cypool's current thread count."""
    torch, _ = _torch()
    if torch is not None:
        torch.set_num_threads(cypool.get_num_threads())
    ws = [w for w in workloads() if w.quick or not quick]
    bar = Progress(len(ws), "benchmark") if progress else None
    results = []
    for w in ws:
        results.append(run_workload(w, repeat))
        if bar:
            bar.step(f"{w.name} {w.direction} {w.layout}")
    return results


def table(results: list[dict]) -> str:
    """The results as a fixed-width text table (times in ms, ratios = peer / cypool)."""
    peers = sorted({p for r in results for p in r["speedup"]}, key=lambda p: (p != "torch", p))
    head = ["workload", "dir", "layout", "cypool ms"] + [f"{p} ms" for p in peers] + \
           [f"vs {p}" for p in peers]
    rows = []
    for r in results:
        m = r["median_s"]
        row = [f"{r['name']} {r['dtype']}" if r["dtype"] != "float32" else r["name"],
               {"forward": "fwd", "backward": "bwd"}[r["direction"]], r["layout"], f"{m['cypool'] * 1e3:.3f}"]
        row += [f"{m[p] * 1e3:.3f}" if p in m else "-" for p in peers]
        row += [f"{r['speedup'][p]:.2f}x" if p in r["speedup"] else "-" for p in peers]
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda row: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths)))
    lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    lines.append("vs X = X's median time / cypool's (above 1: cypool is faster)")
    speedups = [r["speedup"]["torch"] for r in results if "torch" in r["speedup"]]
    if speedups:
        gm = math.exp(sum(math.log(s) for s in speedups) / len(speedups))
        lines.append(f"geometric-mean speedup over torch: {gm:.2f}x "
                     f"({len(speedups)} workloads, {results[0]['threads']} threads)")
    return "\n".join(lines)
