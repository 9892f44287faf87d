"""Time cypool against JAX on the built-in workloads, each row apart.

    python bench/jax_apart.py --json jax.json               every row JAX can run
    python bench/jax_apart.py --rows 0,2,6 --timeout 300     some rows, 5 minutes each

JAX (XLA on the CPU) keeps its worker threads spinning between calls, which
on a machine of few cores slows whatever is timed after it; in the full
suite (``python -m cypool bench --full``) it makes every row noisier, and
its compiles of the large adaptive-average backwards take minutes.  This
script therefore times each workload in a process of its own: cypool, JAX,
torch in both layouts and ONNX Runtime (where the workload has them),
interleaved in the same rounds by ``cypool._bench.run_workload``, and gives
up on a row whose compile or timing outlasts ``--timeout``.  Rows JAX cannot
express (adaptive bins that do not tile the input, integer dtypes) are
listed as such.  Each result holds the medians' ratios (peer / cypool, so
above 1 means cypool is faster) and cypool's fraction of the roofline.

Needs ``jax`` (``python -m pip install ".[bench]"``).
"""
import argparse
import json
import subprocess
import sys

PEERS = ("jax", "torch", "torch-other", "onnxruntime")


def one_row(i: int, repeat: int) -> dict:
    """Row ``i`` of the registry timed with JAX (run in a child process)."""
    from cypool import _bench, _peers

    w = _bench.workloads()[i]
    row = {"row": i, "name": w.name, "direction": w.direction, "layout": w.layout,
           "dtype": w.dtype}
    if not _peers.available("jax"):
        return {**row, "jax": "jax is not installed"}
    if "jax" not in w.peers:
        return {**row, "jax": "cannot express this workload"}
    w.peers = {k: v for k, v in w.peers.items() if k in PEERS}
    r = _bench.run_workload(w, repeat=repeat)
    return {**row, "cypool_ms": r["median_s"]["cypool"] * 1e3,
            "speedup": r["speedup"], "roofline_fraction": r["roofline_fraction"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", help="comma-separated registry rows (default: all)")
    p.add_argument("--repeat", type=int, default=7, help="timed rounds a row (default 7)")
    p.add_argument("--timeout", type=float, default=540,
                   help="seconds a row may take, JAX's compile included (default 540)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)   # (the child's side)
    a = p.parse_args(argv)
    if a.one is not None:
        print(json.dumps(one_row(a.one, a.repeat)))
        return 0
    from cypool import _bench, _peers

    n = len(_bench.workloads())
    try:
        rows = [int(s) for s in a.rows.split(",")] if a.rows else list(range(n))
    except ValueError:
        p.error(f"--rows: comma-separated integers, got {a.rows!r}")
    bad = [i for i in rows if not 0 <= i < n]
    if bad:
        p.error(f"--rows: {bad} not in [0, {n})")
    if a.timeout <= 0 or a.repeat < 1:
        p.error("--timeout must be positive and --repeat at least 1")
    if not _peers.available("jax"):
        print("jax is not installed (python -m pip install \".[bench]\")", file=sys.stderr)
        return 1
    results = []
    for k, i in enumerate(rows, 1):
        print(f"[{k}/{len(rows)}] row {i} ...", end=" ", flush=True, file=sys.stderr)
        try:
            out = subprocess.run([sys.executable, "-P", __file__, "--one", str(i),
                                  "--repeat", str(a.repeat)], capture_output=True,
                                 text=True, timeout=a.timeout)
            res = (json.loads(out.stdout.splitlines()[-1]) if out.returncode == 0
                   else {"row": i, "jax": f"failed: {out.stderr.strip()[-300:]}"})
        except subprocess.TimeoutExpired:
            res = {"row": i, "jax": f"not timed: over {a.timeout:g} s (JAX's compile)"}
        results.append(res)
        sp = res.get("speedup", {}).get("jax")
        print(f"jax {sp:.2f}x cypool's time" if sp else res["jax"], file=sys.stderr)
    timed = [r for r in results if "speedup" in r]
    for r in timed:
        print(f"{r['row']:3d}  {r['name'][:46]:46s} {r['direction'][:3]} {r['layout']}  "
              f"jax {r['speedup']['jax']:8.2f}x  torch {r['speedup'].get('torch', 0):6.2f}x")
    if timed:
        worst = min(timed, key=lambda r: r["speedup"]["jax"])
        print(f"closest: row {worst['row']}, JAX {worst['speedup']['jax']:.2f}x cypool's time "
              f"({len(timed)} rows timed)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"repeat": a.repeat, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
