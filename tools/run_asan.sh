#!/usr/bin/env bash
# AddressSanitizer run: cnnext's extensions built with -fsanitize=address
# (CNNEXT_SANITIZE=address, see setup.py) in their own virtual environment,
# then a representative part of the test suite with libasan preloaded into
# an ordinary CPython.  Every heap/stack/global out-of-bounds access or
# use-after-free in the kernels (and in anything else in the process) is
# reported; leak detection is off because CPython keeps memory until exit by
# design.  PYTHONMALLOC=malloc routes Python's own small objects through
# malloc so ASan guards them too.
#
# The fuzz worker subprocesses inherit the preload, so every fuzz case runs
# under ASan as well (a report kills the worker and test_fuzz names the case).
#
# Builds the *committed* HEAD, exported to a scratch directory.  Not run by
# CI (the instrumented run is slow).  Exit code: non-zero if pytest failed or
# ASan reported anything; the reports are in $WORK/asan.*.
#
# Usage:  bash tools/run_asan.sh [test files ...]
# Environment:
#   PYTHON=python3            interpreter for the venv
#   CNNEXT_ASAN_DIR=DIR       scratch directory (default: a new /tmp/cnnext-asan.*)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
CC_=${CC:-gcc}
WORK=${CNNEXT_ASAN_DIR:-$(mktemp -d /tmp/cnnext-asan.XXXXXX)}
mkdir -p "$WORK/src"
echo "== ASan build of $(git -C "$REPO" rev-parse --short HEAD) in $WORK"
git -C "$REPO" archive HEAD | tar -x -C "$WORK/src"
"$PY" -m venv --system-site-packages "$WORK/venv"
CNNEXT_SANITIZE=address "$WORK/venv/bin/pip" install --no-build-isolation --no-deps \
    --force-reinstall -q "$WORK/src"

LIBASAN=$("$CC_" -print-file-name=libasan.so)
[ -e "$LIBASAN" ] || { echo "libasan not found (tried $LIBASAN)"; exit 2; }
for m in _conv _pool; do
    so=$(ls "$WORK"/venv/lib/python*/site-packages/cnnext/$m.*.so)
    # (no grep -q: it would close the pipe early and pipefail would trip)
    nm -D "$so" | grep __asan_init >/dev/null || { echo "$so is not instrumented"; exit 2; }
done
echo "   extensions instrumented; preloading $LIBASAN"

# Positive control: the preloaded ASan must catch a deliberate heap overflow.
if LD_PRELOAD="$LIBASAN" ASAN_OPTIONS="detect_leaks=0:log_path=$WORK/control" \
    "$WORK/venv/bin/python" -c "
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(8)
ctypes.memset(p, 0, 9)  # one byte past the end
" 2>/dev/null; then
    echo "ASan did not catch a deliberate heap overflow: the run would prove nothing"; exit 2
fi
grep -q "heap-buffer-overflow" "$WORK"/control.* \
    || { echo "ASan control: no heap-buffer-overflow report"; exit 2; }
rm -f "$WORK"/control.*
echo "   positive control: ASan reports a deliberate heap-buffer-overflow"

if [ $# -eq 0 ]; then
    set -- tests/test_functional.py tests/test_validation.py tests/test_fuzz.py \
        tests/test_nonfinite.py tests/test_threads.py tests/test_nn.py tests/test_compat.py \
        tests/test_torch_compat.py tests/test_files.py
fi
args=()
for t in "$@"; do args+=("$WORK/src/$t"); done

cd "$WORK"
rm -f "$WORK"/asan.*
start=$(date +%s)
set +e
# No RLIMIT_AS under ASan (its shadow memory needs terabytes of address
# space): the fuzz worker's cap is off (CNNEXT_FUZZ_AS_LIMIT=0) and single
# allocations above 2 GiB fail (return NULL -> MemoryError) instead.
# test_validation's test_huge_requests_do_not_touch_memory sets RLIMIT_AS
# in its subprocess, which ASan cannot run under: it is deselected.
LD_PRELOAD="$LIBASAN" PYTHONMALLOC=malloc CNNEXT_FUZZ_AS_LIMIT=0 \
ASAN_OPTIONS="detect_leaks=0:log_path=$WORK/asan:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=2048" \
    "$WORK/venv/bin/python" -m pytest -c "$WORK/src/pyproject.toml" --rootdir "$WORK/src" \
    -p no:cacheprovider -q -k "not test_huge_requests_do_not_touch_memory" "${args[@]}"
rc=$?
set -e
echo "== ASan run finished in $(( $(date +%s) - start )) s, pytest exit code $rc"
reports=$(ls "$WORK"/asan.* 2>/dev/null || true)
errors=0
for r in $reports; do
    if grep -q "ERROR: AddressSanitizer" "$r"; then
        errors=$((errors + 1))
        echo "--- ERROR in $r:"
        grep -m1 "ERROR: AddressSanitizer" "$r"
        if grep -q "cnnext/_\(conv\|pool\|openmp\)\|_conv\.c\|_pool\.c\|cnnext_ukernel" "$r"; then
            echo "    (stack involves cnnext's kernels)"
        fi
    else
        # e.g. "WARNING: AddressSanitizer failed to allocate ..." for a huge
        # request that returned NULL (-> MemoryError), as the tests expect
        echo "--- note in $r: $(head -c 200 "$r" | tr '\n' ' ')"
    fi
done
echo "== ASan: $errors error report(s)"
[ "$errors" -eq 0 ] || rc=1
exit $rc
