"""Benchmark cypool against PyTorch CPU and NumPy on the built-in workloads.

    python bench/run.py                 quick workloads (as `python -m cypool bench`)
    python bench/run.py --full          every workload
    python bench/run.py --threads 1     at another thread count
    python bench/run.py --json out.json write medians and ratios as JSON

The workloads live in one registry, ``cypool._bench.workloads()``,
so the benchmark and the main job time exactly the same calls.
"""
import sys

from cypool.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
