"""The installed package: where it is imported from, what importing it pulls
in, its dispatcher and its documentation (every docstring example runs)."""
from __future__ import annotations

import doctest
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cypool
from cypool import reference

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = [name for name in cypool.__all__ if callable(getattr(cypool, name))]


def test_imported_from_installed_copy_not_source_tree():
    pkg = Path(cypool.__file__).resolve().parent
    source = (REPO / "cypool").resolve()
    assert pkg != source, f"tests import the unbuilt source tree {source}"
    assert source not in pkg.parents
    assert Path(cypool._kernels.__file__).resolve().parent == pkg
    assert Path(reference.__file__).resolve().parent == pkg


def test_all_names_exist_and_cover_every_rank():
    for name in cypool.__all__:
        assert hasattr(cypool, name), name
    for rank in (1, 2, 3):
        for stem in ("adaptive_avg_pool{}d", "adaptive_max_pool{}d",
                     "adaptive_avg_pool{}d_backward", "adaptive_max_pool{}d_backward",
                     "global_avg_pool{}d", "global_max_pool{}d"):
            assert stem.format(rank) in cypool.__all__
    for name in ("backend", "get_num_threads", "set_num_threads", "show_config"):
        assert name in cypool.__all__
    assert len(set(cypool.__all__)) == len(cypool.__all__)


@pytest.mark.parametrize("x", [np.zeros((1, 2, 3)), np.float32(1.0),
                               np.zeros((2, 2))[::-1], [[1.0, 2.0]], [[1, 2]], 3.0],
                         ids=["ndarray", "numpy-scalar", "view", "list", "int-list",
                              "python-float"])
def test_backend_numpy(x):
    assert cypool.backend(x) == "numpy"


def _run_python(code: str, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_does_not_pull_in_cupy_or_dask(tmp_path):
    code = (
        "import sys, json\n"
        "import numpy as np, cypool\n"
        "cypool.adaptive_avg_pool2d(np.ones((1, 1, 4, 4)), 2)\n"
        "cypool.backend(np.ones(3))\n"
        "mods = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'cupyx', 'dask', 'torch')]\n"
        "print(json.dumps({'mods': mods, 'file': cypool.__file__}))\n"
    )
    res = _run_python(code, tmp_path)
    assert res["mods"] == []
    assert not Path(res["file"]).resolve().is_relative_to((REPO / "cypool").resolve())


def test_source_tree_import_is_refused_clearly(tmp_path):
    """Importing the checkout's unbuilt cypool/ fails with a message that
    says what to do, instead of a bare missing-module error."""
    if not (REPO / "setup.py").exists() or list((REPO / "cypool").glob("_kernels*.so")):
        pytest.skip("no source checkout without built kernels here")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", "import cypool"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "source tree" in proc.stderr


# ---------------------------------------------------------------------------
# Docstrings and doctests
# ---------------------------------------------------------------------------

def _run_doctests(obj, name):
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(obj, name, globs={}) if t.examples]
    for t in tests:
        runner.run(t)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_function_docstring_examples_run(name):
    obj = getattr(cypool, name)
    doc = inspect.getdoc(obj)
    assert doc and "Examples" in doc, f"{name} has no Examples section"
    before = cypool.get_num_threads()
    try:
        result = _run_doctests(obj, name)
    finally:
        cypool.set_num_threads(before)
    assert result.attempted > 0, f"{name}: no doctest examples found"
    assert result.failed == 0, f"{name}: {result.failed} doctest example(s) failed"


@pytest.mark.parametrize("obj,name", [(cypool, "cypool"), (reference, "cypool.reference")],
                         ids=["cypool", "reference"])
def test_module_doctests(obj, name):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(obj, name, globs={}) if t.examples]
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_function_documents_its_parameters(name):
    """numpydoc: every parameter of a public function appears in its docstring."""
    obj = getattr(cypool, name)
    doc = inspect.getdoc(obj)
    for p in inspect.signature(obj).parameters:
        assert p in doc, f"{name}: parameter {p!r} undocumented"


def test_reference_functions_documented():
    for name in reference.__all__:
        assert inspect.getdoc(getattr(reference, name)), name


def test_public_signatures_match_the_contract():
    """Argument names and keyword-only-ness as API.md lists them."""
    def params(f):
        return [(p.name, p.kind.name) for p in inspect.signature(f).parameters.values()]

    kw = "KEYWORD_ONLY"
    pos = "POSITIONAL_OR_KEYWORD"
    for r in (1, 2, 3):
        assert params(getattr(cypool, f"adaptive_avg_pool{r}d")) == [
            ("x", pos), ("output_size", pos), ("channels_last", kw), ("out", kw)]
        assert params(getattr(cypool, f"adaptive_max_pool{r}d")) == [
            ("x", pos), ("output_size", pos), ("return_indices", pos),
            ("channels_last", kw), ("out", kw)]
        assert params(getattr(cypool, f"adaptive_avg_pool{r}d_backward")) == [
            ("grad_output", pos), ("input_shape", pos), ("channels_last", kw), ("out", kw)]
        assert params(getattr(cypool, f"adaptive_max_pool{r}d_backward")) == [
            ("grad_output", pos), ("indices", pos), ("input_shape", pos),
            ("channels_last", kw), ("out", kw)]
        assert params(getattr(cypool, f"global_avg_pool{r}d")) == [
            ("x", pos), ("keepdims", kw), ("channels_last", kw), ("out", kw)]
        assert params(getattr(cypool, f"global_max_pool{r}d")) == [
            ("x", pos), ("keepdims", kw), ("return_indices", kw), ("channels_last", kw),
            ("out", kw)]


def test_readme_example_runs():
    """The README's usage example runs and gives the shapes its comments state."""
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    code = re.search(r"```python\n(.*?)```", readme.read_text(), re.S).group(1)
    ns: dict = {}
    before = cypool.get_num_threads()
    try:
        exec(code.replace("cypool.show_config()", "cypool.show_config(print_out=False)"), ns)
    finally:
        cypool.set_num_threads(before)
    assert ns["y"].shape == (8, 64, 7, 7)
    assert ns["g"].shape == (8, 64)
    assert ns["gx"].shape == ns["x"].shape
