#!/usr/bin/env bash
# Debug build of cnnext (Cython boundscheck/wraparound/initializedcheck on,
# cdivision off, -O0 -g: CNNEXT_CYTHON_DEBUG=1, see setup.py) in its own
# virtual environment, then the whole test suite against it.
#
# A bounds error in a kernel then raises IndexError instead of silently
# reading or writing out of bounds, so the suite passing under this build
# means no test drives a kernel outside its arrays.
#
# It builds the *committed* HEAD, exported to a scratch directory (a fresh
# clone, in effect), so the generated C cannot be confused with a release
# build's src/*.c in the work tree.  Not run by CI (it takes ~10-20 minutes).
#
# Usage:  bash tools/run_debug_tests.sh [extra pytest arguments]
# Environment:
#   PYTHON=python3            interpreter for the venv
#   CNNEXT_DEBUG_DIR=DIR      scratch directory (default: a new /tmp/cnnext-debug.*)
#   CNNEXT_MNIST=DIR          the MNIST test split for the tests that train on it
#                             (default: cnnext's data directory; they skip without it)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${CNNEXT_DEBUG_DIR:-$(mktemp -d /tmp/cnnext-debug.XXXXXX)}
mkdir -p "$WORK/src"
echo "== debug build of $(git -C "$REPO" rev-parse --short HEAD) in $WORK"
git -C "$REPO" archive HEAD | tar -x -C "$WORK/src"
"$PY" -m venv --system-site-packages "$WORK/venv"
CNNEXT_CYTHON_DEBUG=1 "$WORK/venv/bin/pip" install --no-build-isolation --no-deps \
    --force-reinstall -q "$WORK/src"

# Prove this is the bounds-checked build: an inconsistent private kernel call
# (an index past the plane) must raise IndexError, not write out of bounds.
(cd "$WORK" && "$WORK/venv/bin/python" - <<'PY'
import numpy as np
from cnnext import _pool
g = np.ones((1, 4)); idx = np.full((1, 4), 99, dtype=np.int64); gx = np.zeros((1, 4))
try:
    _pool.max_pool2d_backward(g, idx, gx, 1)
except IndexError as exc:
    print(f"bounds checking is on: {exc}")
else:
    raise SystemExit("not a debug build: an out-of-bounds kernel index was not caught")
PY
)

echo "== test suite (debug build)"
# Run from the scratch directory: nothing named cnnext/ is importable there
# except the installed debug build.
cd "$WORK"
start=$(date +%s)
set +e
"$WORK/venv/bin/python" -m pytest -c "$WORK/src/pyproject.toml" --rootdir "$WORK/src" \
    -p no:cacheprovider -q "$WORK/src/tests" "$@"
rc=$?
set -e
echo "== debug-build suite finished in $(( $(date +%s) - start )) s with exit code $rc"
exit $rc
