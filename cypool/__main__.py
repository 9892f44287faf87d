"""``python -m cypool``: a self-check against the slow reference, then a benchmark table.

    python -m cypool              self-check + quick benchmark table
    python -m cypool check        self-check only
    python -m cypool bench        benchmark only (--full for every workload)
    python -m cypool bench --gpu  GPU benchmark: cypool on CuPy arrays vs torch CUDA

The benchmark times cypool against PyTorch CPU (when installed) and NumPy at
the same thread count, interleaved, and prints medians and ratios.  With
--gpu it times cypool on CuPy arrays against PyTorch CUDA with CUDA events
and reports the bandwidth achieved against the device's copy bandwidth.
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    import cypool
    from cypool import _bench

    p = argparse.ArgumentParser(prog="python -m cypool", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="all", choices=["all", "check", "bench"],
                   help="what to run (default: all = check, then bench)")
    p.add_argument("--full", action="store_true", help="benchmark every workload, not the quick set")
    p.add_argument("--repeat", type=int, default=7, help="timed rounds per workload (default 7)")
    p.add_argument("--threads", type=int, default=None, help="threads for cypool and torch")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--chart", metavar="PATH", help="also draw the speedups as a PNG chart "
                   "(needs matplotlib)")
    p.add_argument("--peers", metavar="NAMES",
                   help="comma-separated peers to time (default: every one installed: "
                        "torch, torch-other (torch in the other memory format), numpy, "
                        "onnxruntime, jax, skimage)")
    p.add_argument("--scaling", action="store_true",
                   help="also time cypool at one thread and report the second thread's gain")
    p.add_argument("--gpu", action="store_true",
                   help="bench: time the GPU path (CuPy arrays, against torch CUDA) instead "
                        "of the CPU one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        cypool.set_num_threads(args.threads)
    if args.gpu:
        if args.command != "bench":
            p.error("--gpu applies to the bench command only")
        cpu_only = [f for f, on in (("--full", args.full), ("--scaling", args.scaling),
                                    ("--peers", args.peers), ("--chart", args.chart)) if on]
        if cpu_only:
            p.error(f"{', '.join(cpu_only)}: not for --gpu (a fixed set of workloads, "
                    "timed against torch CUDA)")
        why = _bench.gpu_unavailable()
        if why is not None:     # one line, no traceback: the CPU path still works
            print(f"bench --gpu: no CUDA device ({why})", file=sys.stderr)
            return 1

    cfg = cypool.show_config(print_out=False)
    print(f"cypool {cfg['cypool']}  numpy {cfg['numpy']}  OpenMP "
          f"{'on' if cfg['openmp'] else 'OFF'}  threads {cfg['threads']}")
    status = 0
    if args.command in ("all", "check"):
        n, failures = _bench.self_check(progress=not args.no_progress)
        if failures:
            print(f"self-check: {len(failures)} of {n} comparisons FAILED:")
            for f in failures:
                print(f"  {f}")
            status = 1
        else:
            print(f"self-check: all {n} comparisons with cypool.reference agree")
    if args.command in ("all", "bench"):
        if args.gpu:
            info = _bench.gpu_info()
            cfg = {**cfg, "gpu": info}
            print(f"GPU {info['device']} (device {info['device_id']})  CuPy {info['cupy']}  "
                  f"torch CUDA {info['torch_cuda'] or 'not available'}")
            results = _bench.run_gpu(repeat=args.repeat, progress=not args.no_progress)
            print(_bench.table_gpu(results))
        else:
            results = _bench.run(quick=not args.full, repeat=args.repeat,
                                 progress=not args.no_progress, scaling=args.scaling,
                                 peers=set(args.peers.split(",")) if args.peers else None)
            print(_bench.table(results))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"config": cfg, "results": results}, f, indent=1)
            print(f"results written to {args.json}")
        if args.chart:
            _bench.chart(results, args.chart)
            print(f"chart written to {args.chart}")
    return status


if __name__ == "__main__":
    sys.exit(main())
