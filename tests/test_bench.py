"""The main job's machinery: self-check, timing, roofline, table, chart."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

import cypool
from cypool import _bench, _gpu


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
    assert r["thread_speedup"] == r["cypool_1thread_s"] / r["median_s"]["cypool"] > 0
    assert 0 < r["roofline_1thread_fraction"] == r["roofline_1thread_s"] / r["cypool_1thread_s"]
    assert cypool.get_num_threads() == r["threads"]     # the one-thread rounds put it back
    text = _bench.table([r])
    assert "tiny" in text and "fails" in text and "roofline" in text
    assert "1-thread roofline" in text
    json.dumps(r)                       # the JSON the CLI writes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("m", [1, 5, 37, 70000, 140001])
def test_roofline_probe_reads_everything_and_writes_nonzero_bits(dtype, stream, m):
    """The probe's checksum is the input's sum, and every output element is
    written with bits that are not zero (a zero fill is faster here than
    writing any real result); the streamed fill handles any length."""
    from cypool import _kernels

    x = np.arange(70001, dtype=dtype) % 7
    store = np.zeros(m + 3, dtype)
    y = store[1:m + 1]                      # an unaligned start
    for threads in (1, 2):
        y[:] = 0
        assert _kernels.stream_probe(x, y, threads, stream) == pytest.approx(x.sum())
        assert (y != 0).all()
        assert store[0] == 0 and (store[m + 1:] == 0).all()     # nothing outside y


def test_roofline_probe_streams_as_the_kernels_do(monkeypatch):
    from cypool import _cpu, _kernels

    calls = []
    monkeypatch.setattr(_kernels, "stream_probe", lambda *a: calls.append(a[3:]))
    _bench._roofline_probe(64, _cpu.STREAM_BYTES, 1)(None)
    _bench._roofline_probe(64, _cpu.STREAM_BYTES - 4, 1)(None)
    assert calls == [(True,), (False,)]


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


def test_gpu_workloads_come_from_the_registry():
    """Every GPU workload is a registry entry (a renamed one is caught here,
    not on a GPU machine), forward and backward in both layouts."""
    ws = _bench.gpu_workloads()
    assert [w.name for w in ws[::4]] == list(_bench.GPU_WORKLOADS)
    for name in _bench.GPU_WORKLOADS:
        group = [(w.layout, w.direction) for w in ws if w.name == name]
        assert group == [("NCHW", "forward"), ("NCHW", "backward"),
                         ("NHWC", "forward"), ("NHWC", "backward")], name
    assert {w.dtype for w in ws} == {"float32"}
    if importlib.util.find_spec("torch") is not None:    # each one has a torch peer
        assert all("torch" in w.peers for w in ws)


def _fake_gpu_result(name, direction="forward", torch_s=0.015, fails=False):
    w = _bench.Workload(name, (2, 3, 8, 8), "float32", direction, "NCHW", False,
                        dict, lambda d: None)
    med = {"cypool": 0.010} if torch_s is None else {"cypool": 0.010, "torch": torch_s}
    return _bench.gpu_result(w, med, 0.008, 1_200_000_000, 800_000_000, repeat=5, inner=3,
                             unsupported={"torch": "RuntimeError: no"} if fails else None,
                             device="Fake GPU")


def test_gpu_bandwidth_and_table():
    r = _fake_gpu_result("pool A")
    # 2 GB moved in 10 ms: 200 GB/s; torch 15 ms: 133 GB/s; the copy 8 ms: 250 GB/s
    assert r["gbs"]["cypool"] == pytest.approx(200.0)
    assert r["gbs"]["torch"] == pytest.approx(2e9 / 0.015 / 1e9)
    assert r["copy_gbs"] == pytest.approx(250.0)
    assert r["copy_fraction"] == pytest.approx(0.8)
    assert r["speedup"] == {"torch": pytest.approx(1.5)}
    rows = [r, _fake_gpu_result("pool B", "backward", torch_s=0.005),
            _fake_gpu_result("pool C", torch_s=None, fails=True)]
    text = _bench.table_gpu(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["workload", "dir", "layout", "cypool", "ms", "GB/s", "of",
                                "copy", "torch", "ms", "torch", "GB/s", "vs", "torch"]
    a = lines[2].split()
    assert a[-8:] == ["fwd", "NCHW", "10.000", "200", "80%", "15.000", "133", "1.50x"]
    assert lines[3].split()[-2:] == ["400", "0.50x"]            # torch faster: below 1
    assert lines[4].split()[-4:] == ["80%", "fails", "-", "-"]  # torch refused the case
    assert "device-to-device copy on Fake GPU: 250 to 250 GB/s" in text
    # the geometric mean of 1.5x and 0.5x, the failed case left out
    assert "geometric-mean speedup over torch CUDA: 0.87x (2 workloads)" in text
    json.dumps(rows)                    # the JSON the CLI writes
    alone = _bench.table_gpu([_fake_gpu_result("pool D", torch_s=None)])
    assert "torch CUDA not available" in alone and "vs torch" not in alone


@pytest.mark.skipif(_gpu.device_count() > 0, reason="a CUDA device is here: the "
                    "GPU benchmark would run")
def test_main_bench_gpu_without_a_device(tmp_path):
    """No CuPy or no device: one clear line and status 1, never a traceback."""
    out = subprocess.run([sys.executable, "-P", "-m", "cypool", "bench", "--gpu"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout == ""
    assert out.stderr.strip() in ("bench --gpu: no CUDA device (CuPy not installed)",
                                  "bench --gpu: no CUDA device (CuPy finds none)")
    assert "Traceback" not in out.stderr


def test_main_gpu_flag_is_for_bench_only(tmp_path):
    for args in (["check", "--gpu"], ["bench", "--gpu", "--full"]):
        out = subprocess.run([sys.executable, "-P", "-m", "cypool", *args], capture_output=True,
                             text=True, cwd=tmp_path, timeout=300, check=False)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "--gpu" in out.stderr and "Traceback" not in out.stderr


def test_torch_in_the_other_layout_times_the_same_values_converted_once():
    """torch-other: torch's call on the row's tensors in the other memory
    format (channels-first rows get channels-last tensors and the reverse),
    converted at the first call only, the row's own tensors untouched."""
    torch = pytest.importorskip("torch")
    seen = []

    def f(d):
        seen.append(d)
        return d["t"] * 2

    for cl in (False, True):
        seen.clear()
        x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
        t = x.contiguous(memory_format=torch.channels_last) if cl else x
        d = {"t": t, "tg": torch.ones_like(t), "ti": torch.zeros_like(t, dtype=torch.int64),
             "x": "numpy input"}
        call = _bench._in_other_layout(f)
        y1, y2 = call(d), call(d)
        assert seen[0] is seen[1]                       # converted once
        o = seen[0]
        for k in ("t", "tg", "ti"):
            assert torch.equal(o[k], d[k])              # the same values
            assert o[k].is_contiguous(memory_format=torch.channels_last) != cl
            assert o[k].is_contiguous() == cl
        assert d["t"] is t and o["x"] == "numpy input"
        assert torch.equal(y1, x * 2) and torch.equal(y2, x * 2)
    x3 = torch.zeros(1, 2, 3, 4, 5)
    seen.clear()
    _bench._in_other_layout(f)({"t": x3})
    assert seen[0]["t"].is_contiguous(memory_format=torch.channels_last_3d)


def test_every_row_with_torch_also_times_torch_in_the_other_layout():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    for w in _bench.workloads():
        if "torch" in w.peers:
            assert _bench.TORCH_OTHER in w.peers, (w.name, w.layout, w.direction)


def _jax_apart():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "jax_apart.py"
    spec = importlib.util.spec_from_file_location("jax_apart", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_jax_apart_checks_its_arguments_before_timing_anything(capsys):
    mod = _jax_apart()
    n = len(_bench.workloads())
    for bad in (["--rows", str(n)], ["--rows", "0,x"], ["--rows", "-1"],
                ["--rows", "0", "--timeout", "0"]):
        with pytest.raises(SystemExit) as e:
            mod.main(bad)
        assert e.value.code == 2
        assert "--rows" in capsys.readouterr().err or "--timeout" in str(bad)


def test_jax_apart_says_why_a_row_has_no_jax_time(monkeypatch):
    from cypool import _peers

    mod = _jax_apart()
    (i113,) = [i for i, w in enumerate(_bench.workloads())
               if w.shape == (32, 64, 113, 97) and w.direction == "forward"
               and w.layout == "NCHW"]
    real = _peers.available
    monkeypatch.setattr(_peers, "available", lambda name: name == "jax" or real(name))
    row = mod.one_row(i113, 1)      # adaptive bins that do not tile: no reduce_window
    assert row["jax"] == "cannot express this workload" and "speedup" not in row
    assert row["name"].startswith("adaptive_avg_pool2d (32, 64, 113, 97)")
    monkeypatch.setattr(_peers, "available", lambda name: name != "jax" and real(name))
    assert mod.one_row(0, 1)["jax"] == "jax is not installed"
    assert mod.main(["--rows", "0"]) == 1
