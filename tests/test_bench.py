"""The main job's machinery: self-check, timing, roofline, table, chart."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import cypool
from cypool import _bench


def test_self_check_passes_and_counts():
    n, failures = _bench.self_check(progress=False)
    assert failures == []
    assert n == 6 * len(_bench._check_cases())


def test_self_check_catches_a_wrong_kernel(monkeypatch):
    """The self-check is not a formality: a wrong average is reported."""
    real = cypool.adaptive_avg_pool2d
    monkeypatch.setattr(cypool, "adaptive_avg_pool2d", lambda *a, **k: real(*a, **k) * 1.001)
    _, failures = _bench.self_check(progress=False)
    assert any(f.startswith("avg: 2d") for f in failures)


def _tiny_workload():
    def setup():
        x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
        return {"x": x, "x_nchw": x}
    return _bench.Workload("tiny", (2, 3, 8, 8), "float32", "forward", "NCHW", True, setup,
                           lambda d: cypool.adaptive_avg_pool2d(d["x"], 2),
                           {"numpy": lambda d: d["x"].reshape(2, 3, 2, 4, 2, 4).mean((3, 5)),
                            "broken": lambda d: 1 / 0})


def test_run_workload_reports_medians_roofline_and_refusals():
    r = _bench.run_workload(_tiny_workload(), repeat=3, scaling=True)
    assert set(r["median_s"]) == {"cypool", "numpy"}
    assert r["unsupported"]["broken"].startswith("ZeroDivisionError")
    assert r["speedup"]["numpy"] == pytest.approx(r["median_s"]["numpy"] / r["median_s"]["cypool"])
    assert 0 < r["roofline_fraction"] == r["roofline_s"] / r["median_s"]["cypool"]
    assert r["thread_speedup"] > 0
    text = _bench.table([r])
    assert "tiny" in text and "fails" in text and "roofline" in text
    json.dumps(r)                       # the JSON the CLI writes


def test_registry_covers_the_workloads():
    ws = _bench.workloads()
    names = {w.name for w in ws}
    assert any(n.startswith("max_pool2d (32, 64, 112, 112)") for n in names)
    assert any(n.startswith("global_avg_pool2d (64, 2048, 7, 7)") for n in names)
    assert {w.direction for w in ws} == {"forward", "backward"}
    assert {w.layout for w in ws} == {"NCHW", "NHWC"}
    assert any(w.quick for w in ws)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_chart_writes_a_png(tmp_path):
    r = _bench.run_workload(_tiny_workload(), repeat=2)
    path = tmp_path / "c.png"
    _bench.chart([r], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_check_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cypool", "check", "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "self-check: all" in out.stdout


@pytest.mark.skipif(not (importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx")),
                    reason="needs onnxruntime and onnx (the bench extra)")
def test_onnx_peer_computes_indices_when_the_workload_does():
    from cypool import _peers

    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    kw = dict(kernel_size=2)
    with_idx = _peers.peers("fixed", "max", 2, x.shape, "float32", "NCHW", "forward", kw=kw,
                            indices=True)["onnxruntime"]({"x_nchw": x})
    values = _peers.peers("fixed", "max", 2, x.shape, "float32", "NCHW", "forward",
                          kw=kw)["onnxruntime"]({"x_nchw": x})
    assert len(with_idx) == 2 and with_idx[1].dtype == np.int64 and len(values) == 1
    want = cypool.max_pool2d(x, 2)
    assert np.array_equal(with_idx[0], want) and np.array_equal(values[0], want)
