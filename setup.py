"""Build of cypool's compiled kernels: the extension list and an OpenMP-aware build_ext.

CYPOOL_OPENMP=1  OpenMP is required: the build fails when the compiler has none.
CYPOOL_OPENMP=0  build serial kernels (no OpenMP).
unset            use OpenMP when the compiler has it, warn and build serial otherwise.

No flag here depends on the build machine's CPU (no native-arch tuning): wheels
built here run on any x86-64 (or aarch64) machine.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel
    {
        #pragma omp atomic
        n += 1;
    }
    printf("%d\n", n > 0 && omp_get_max_threads() > 0);
    return 0;
}
"""


def _openmp_flags(compiler_type):
    """(compile flags, link flags) that turn OpenMP on for this compiler family."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def _probe_openmp(compiler, cflags, ldflags):
    """True when a small OpenMP program compiles, links and runs."""
    tmp = tempfile.mkdtemp(prefix="cypool-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objs, exe, extra_postargs=ldflags)
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        return out.returncode == 0 and out.stdout.strip() == "1"
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class OpenMPBuildExt(build_ext):
    def build_extensions(self):
        want = os.environ.get("CYPOOL_OPENMP", "").strip()
        if want not in ("", "0", "1"):
            raise SystemExit(f"CYPOOL_OPENMP must be 0, 1 or unset, got {want!r}")
        ctype = self.compiler.compiler_type
        cflags, ldflags = _openmp_flags(ctype)
        use_openmp = False
        if want != "0":
            use_openmp = _probe_openmp(self.compiler, cflags, ldflags)
            if not use_openmp:
                msg = ("cypool: the C compiler cannot build OpenMP programs "
                       f"(tried {' '.join(cflags)} / {' '.join(ldflags)})")
                if want == "1":
                    raise SystemExit(msg + "; CYPOOL_OPENMP=1 asks for OpenMP, so the build stops.")
                print(msg + "; building serial kernels.", file=sys.stderr)
        opt = ["/O2"] if ctype == "msvc" else ["-O3", "-fno-math-errno", "-fno-trapping-math",
                                              "-Wno-tautological-compare"]
        for ext in self.extensions:
            ext.extra_compile_args = opt + (cflags if use_openmp else [])
            ext.extra_link_args = ldflags if use_openmp else []
            ext.define_macros = [("CYPOOL_BUILT_WITH_OPENMP", "1" if use_openmp else "0"),
                                 ("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]
        print(f"cypool: building with OpenMP {'on' if use_openmp else 'off'}", file=sys.stderr)
        super().build_extensions()


# The GPU path's sources, shipped inside the package (cypool/_cuda/) for
# CuPy to compile at run time, from their one copy in src/.
CUDA_SOURCES = ("cypool_pool.cu", "cypool_window.h", "cypool_cuda_host.h")


class BuildPyWithCuda(build_py):
    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "cypool", "_cuda")
        os.makedirs(dest, exist_ok=True)
        for name in CUDA_SOURCES:
            shutil.copyfile(os.path.join("src", name), os.path.join(dest, name))


def extensions():
    from Cython.Build import cythonize

    exts = [Extension("cypool._kernels", ["src/_kernels.pyx"], include_dirs=["src"])]
    return cythonize(exts, compiler_directives={"language_level": 3},
                     include_path=["src"])


setup(ext_modules=extensions(), cmdclass={"build_ext": OpenMPBuildExt,
                                         "build_py": BuildPyWithCuda})
