"""Build script for cnnext's compiled kernels.

Environment variables
---------------------
CNNEXT_CYTHON_DEBUG=1
    Debug build: bounds checking, wraparound and initialized checks back on,
    no optimisation, debug symbols kept.  Used by the debug CI job.
CNNEXT_REQUIRE_OPENMP=1
    Make a compiler without OpenMP a build error (set in CI and wheel builds).
    Without it a missing OpenMP gives a warning and a serial build.
CNNEXT_SANITIZE=address
    Build with AddressSanitizer (gcc/clang only) for the sanitizer run.
"""
import glob
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("CNNEXT_CYTHON_DEBUG", "0") not in ("", "0")
SANITIZE = os.environ.get("CNNEXT_SANITIZE", "")

# The one directives dict.  The debug toggle turns the checks back on.
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "nonecheck": DEBUG,
    "embedsignature": True,
}

# The list of compiled modules lives in cnnext/_extensions.py (also read by
# the import-time build check, the tests and the wheel check).
MODULES = runpy.run_path(os.path.join("cnnext", "_extensions.py"))["EXTENSIONS"]


def _openmp_flags(compiler_type):
    """(compile_args, link_args) that enable OpenMP for this compiler."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        # Apple clang: libomp from Homebrew or from the wheel build's
        # bundled copy (CPPFLAGS/LDFLAGS point at it).
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d", n > 0 ? omp_get_max_threads() : 0);
    return 0;
}
"""


def _check_openmp(compiler, compile_args, link_args):
    """Compile and link a tiny OpenMP program: True if it builds."""
    tmp = tempfile.mkdtemp(prefix="cnnext-omp-")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("probe.c", "w") as f:
            f.write(_PROBE)
        objs = compiler.compile(["probe.c"], extra_postargs=compile_args)
        compiler.link_executable(objs, "probe", extra_postargs=link_args)
        return True
    except Exception:  # CompileError, LinkError, DistutilsExecError ...
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        ctype = self.compiler.compiler_type
        omp_c, omp_l = _openmp_flags(ctype)
        # A subprocess-free probe through the same compiler object that will
        # build the extensions (so CC/CFLAGS/LDFLAGS all apply).
        have_omp = _check_openmp(self.compiler, omp_c, omp_l)
        if not have_omp:
            msg = (
                "cnnext: this compiler cannot build OpenMP code (tried "
                f"{' '.join(omp_c + omp_l)}); the kernels will run single-threaded. "
                "On macOS install libomp (brew install libomp)."
            )
            if os.environ.get("CNNEXT_REQUIRE_OPENMP", "0") not in ("", "0"):
                raise RuntimeError(msg + " CNNEXT_REQUIRE_OPENMP is set: refusing to build.")
            warnings.warn(msg)
            omp_c, omp_l = [], []
        if ctype == "msvc":
            opt = ["/Od", "/Zi"] if DEBUG else ["/O2"]
        else:
            opt = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
            # Quiet the deprecated-API noise from generated code.
            opt += ["-Wno-unused-function"]
            # Nothing reads errno: sqrt may then be the vector instruction
            # (loops with a square root vectorise; results are the same).
            opt += ["-fno-math-errno"]
            if SANITIZE:
                opt += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer"]
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + opt + omp_c
            ext.extra_link_args = list(ext.extra_link_args) + omp_l
            if SANITIZE and ctype != "msvc":
                ext.extra_link_args.append(f"-fsanitize={SANITIZE}")
            if not DEBUG and ctype != "msvc" and sys.platform.startswith("linux"):
                ext.extra_link_args.append("-Wl,--strip-debug")
            ext.define_macros = list(ext.define_macros) + [
                ("CNNEXT_HAVE_OPENMP", "1" if omp_c else "0")
            ]
        super().build_extensions()


def extensions():
    exts = [
        Extension(
            f"cnnext.{name}",
            [f"src/{name}.pyx"],
            include_dirs=[numpy.get_include(), "src"],
            # every shared header and declaration: editing one rebuilds the modules
            depends=sorted(glob.glob("src/*.h") + glob.glob("src/cnnext/*.pxd")),
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        )
        for name in MODULES
    ]
    return cythonize(
        exts,
        compiler_directives=COMPILER_DIRECTIVES,
        include_path=["src"],
        # CNNEXT_CYTHON_ANNOTATE=1: HTML annotation next to each .pyx.
        annotate=os.environ.get("CNNEXT_CYTHON_ANNOTATE", "0") not in ("", "0"),
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
