"""Subprocess worker for tests/test_fuzz.py (run as a script, never collected).

The parent sends *cases* (plain dicts of numbers, strings, tuples and numpy
arrays, pickled and length-prefixed) on stdin; the worker runs each one and
answers with a verdict dict on stdout.  Running the calls here, in a process
with a capped address space (``RLIMIT_AS``), means a segfault, an abort or a
runaway allocation kills only this process: the parent sees the worker die
while a case was in flight, reports that case and starts a fresh worker.

A case is one of

``{"kind": "call", "fn": name, "args": [...], "kwargs": {...}}``
    ``cnnext.functional.<name>(*args, **kwargs)``.
``{"kind": "layer", "cls": name, "ctor": [...], "ctor_kw": {...},
"calls": [(method, args), ...]}``
    Construct ``cnnext.nn.<name>(*ctor, **ctor_kw)`` and call its methods
    in order.  An argument ``("__like_last__", seed, scale)`` is replaced by
    a random array shaped like the previous call's result (a random upstream
    gradient, never all ones).

plus ``"names"``: words of which the error message must contain at least
one (the parameter that was made invalid), and for a call an optional
``"inplace"``: positions of arguments the function updates in place by
design (``batch_norm``'s running statistics in training mode); they are left
out of the not-modified check and their final values are compared with the
reference run's like results.

Verdict ``status`` values:

``ok``          returned, and equal to the numpy backend (cnnext.reference)
``unverified``  returned, but the numpy backend ran out of memory
``error``       ValueError/TypeError (or RuntimeError for backward before
                forward) whose message starts with the function's name and
                names the parameter
``memory``      MemoryError from the up-front size check (no allocation)
``alloc``       MemoryError from numpy allocating a genuinely large output
                under the address-space cap
``scratch``     MemoryError from the kernels' scratch allocation
``bad-message`` / ``wrong-exception`` / ``mismatch`` / ``mutated`` /
``backend-disagree``: failures, with ``detail``
"""
import copy
import os
import pickle
import resource
import signal
import struct
import sys
import traceback
import warnings

#: Address-space cap of the worker: far above what any fuzz case needs
#: (the process itself uses ~200 MB) and far below the machine's memory, so
#: a validation gap that lets a huge allocation through fails here instead
#: of swapping the shared machine.
AS_LIMIT = int(os.environ.get("CNNEXT_FUZZ_AS_LIMIT", str(2 << 30)))


def _cap_memory():
    # 0 disables the cap: AddressSanitizer reserves terabytes of shadow
    # address space (tools/run_asan.sh sets 0 and caps allocations through
    # ASAN_OPTIONS=max_allocation_size_mb instead).
    if AS_LIMIT <= 0:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = AS_LIMIT if hard == resource.RLIM_INFINITY else min(AS_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


_cap_memory()

import numpy as np  # noqa: E402  (after the cap: numpy's own pools count too)

import cnnext  # noqa: E402
from cnnext import functional as F  # noqa: E402
from cnnext import nn  # noqa: E402

TOL = {np.dtype(np.float32): (1e-4, 1e-5), np.dtype(np.float64): (1e-10, 1e-10)}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _arrays(obj, out):
    """Every ndarray inside nested lists/tuples/dicts."""
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _arrays(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _arrays(o, out)
    return out


def _snapshot(case):
    arrs = _arrays([case.get("args"), case.get("kwargs"), case.get("ctor"),
                    case.get("ctor_kw"), case.get("calls")], [])
    inplace = {id(case["args"][i]) for i in case.get("inplace", ())}
    return [(a, a.copy(), a.flags.writeable) for a in arrs if id(a) not in inplace]


def _mutated(snap):
    for a, saved, writeable in snap:
        if a.dtype.kind == "O":
            same = a.shape == saved.shape and all(
                x is y for x, y in zip(a.ravel().tolist(), saved.ravel().tolist())
            )
        else:
            same = a.shape == saved.shape and a.dtype == saved.dtype and (
                a.tobytes() == saved.tobytes()
            )
        if not same or a.flags.writeable != writeable:
            return f"input array of shape {saved.shape} dtype {saved.dtype} was modified"
    return None


def _near_max(obj):
    """True if ``obj`` (a case's argument, possibly nested) holds a float
    array with a value beyond 1/16 of its dtype's largest value."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind != "f" or not obj.size:
            return False
        with np.errstate(invalid="ignore"):
            return bool(np.any(np.abs(obj[np.isfinite(obj)]) > np.finfo(obj.dtype).max / 16))
    if isinstance(obj, (list, tuple)):
        return any(_near_max(o) for o in obj)
    if isinstance(obj, dict):
        return any(_near_max(o) for o in obj.values())
    return False


def _compare(a, b, path="result", overflow=False):
    """None if the cython result ``a`` equals the reference result ``b``
    (``overflow``: the inputs may overflow the compute dtype)."""
    if isinstance(b, tuple):
        if not isinstance(a, tuple) or len(a) != len(b):
            return f"{path}: structure {type(a).__name__} vs {type(b).__name__}"
        for i, (x, y) in enumerate(zip(a, b)):
            err = _compare(x, y, f"{path}[{i}]", overflow)
            if err:
                return err
        return None
    if b is None or isinstance(b, (bool, str)):
        return None if a == b else f"{path}: {a!r} != {b!r}"
    if isinstance(b, float):
        if not isinstance(a, float):
            return f"{path}: type {type(a).__name__}, expected float"
        ok = np.isclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
        return None if ok else f"{path}: {a!r} != {b!r}"
    # A numpy scalar and a 0-d array are the same answer (numpy ufuncs turn
    # 0-d inputs into scalars).
    if isinstance(a, np.generic):
        a = np.asarray(a)
    if isinstance(b, np.generic):
        b = np.asarray(b)
    if type(a) is not type(b):
        return f"{path}: type {type(a).__name__} vs reference {type(b).__name__}"
    if not isinstance(b, np.ndarray):
        return f"{path}: unexpected result type {type(b).__name__}"
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{path}: shape/dtype {a.shape} {a.dtype} vs reference {b.shape} {b.dtype}"
    if a.dtype not in TOL:  # passed through unchanged (identity layers): exact
        same = np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        return None if same else f"{path}: {a.dtype} results differ"
    fin = np.isfinite(b)
    if overflow:
        # Inputs near the dtype's largest value: whether a product or partial
        # sum overflows (to inf, or NaN from inf - inf) depends on the order
        # of the sums (PyTorch's too) and on the accumulation dtype (the
        # reference's is float64): compare where both ended finite.
        fin &= np.isfinite(a)
    else:
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return f"{path}: NaN positions differ"
        if not np.array_equal(a[~fin & ~np.isnan(b)], b[~fin & ~np.isnan(b)]):
            return f"{path}: infinities differ"
    rtol, atol = TOL[a.dtype]
    scale = max(1.0, float(np.max(np.abs(b[fin])))) if fin.any() else 1.0
    if not np.allclose(a[fin], b[fin], rtol=rtol, atol=atol * scale):
        d = float(np.max(np.abs(a[fin].astype(np.float64) - b[fin])))
        return f"{path}: values differ from the reference (max abs diff {d:.3g})"
    return None


def _materialize(value, last):
    if isinstance(value, tuple) and value and value[0] == "__like_last__":
        _, seed, scale = value
        shape = np.shape(last) if isinstance(last, np.ndarray) else ()
        g = np.random.default_rng(seed).standard_normal(shape) * scale
        return g.astype(last.dtype if isinstance(last, np.ndarray) else np.float64)
    return value


def _run(case):
    """Run the case under the current backend: ("value", result) or ("raise", exc)."""
    try:
        if case["kind"] == "call":
            out = getattr(F, case["fn"])(*case["args"], **case["kwargs"])
            if case.get("inplace"):
                out = (out,) + tuple(case["args"][i] for i in case["inplace"])
            return "value", out
        layer = getattr(nn, case["cls"])(*case["ctor"], **case["ctor_kw"])
        results, last = [], None
        for method, args in case["calls"]:
            args = [_materialize(a, last) for a in args]
            last = getattr(layer, method)(*args)
            # train()/eval() return the layer itself: nothing to compare.
            results.append(None if isinstance(last, nn.Module) else last)
            if method == "backward":
                results.append(tuple(g.copy() for _, _, g in layer.named_parameters()))
        return "value", tuple(results)
    except Exception as exc:  # noqa: BLE001 - classified by the caller
        return "raise", exc


REF_SECONDS = 5


class _TooSlow(BaseException):
    """Raised by SIGALRM when the reference takes longer than REF_SECONDS."""


def _too_slow(signum, frame):
    raise _TooSlow(f"took longer than {REF_SECONDS} s")


def _fnames(case):
    if case["kind"] == "call":
        return (case["fn"],)
    cls = case["cls"]
    return (cls,) + tuple(f"{cls}.{m}" for m, _ in case["calls"]) + tuple(case.get("inner", ()))


def _classify_exception(case, exc):
    msg = str(exc)
    if isinstance(exc, MemoryError):
        if "scratch" in msg:
            return "scratch", msg
        if "would need" in msg:
            return "memory", msg
        if "Unable to allocate" in msg or msg == "":
            return "alloc", msg
        return "wrong-exception", f"MemoryError with unexpected message: {msg}"
    allowed = (ValueError, TypeError)
    if case["kind"] == "layer" and case.get("allow_runtime"):
        allowed = allowed + (RuntimeError,)
    if not isinstance(exc, allowed):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        return "wrong-exception", f"{type(exc).__name__}: {msg}\n{tb}"
    prefixes = _fnames(case)
    head = msg.split(":", 1)[0]
    if head not in prefixes:
        return "bad-message", f"message does not start with one of {prefixes}: {msg!r}"
    names = case.get("names")
    if names and not any(n in msg for n in names):
        return "bad-message", f"message names none of {list(names)}: {msg!r}"
    return "error", f"{type(exc).__name__}: {msg}"


def evaluate(case):
    snap = _snapshot(case)
    # The reference run gets its own copy made up front (a Generator passed
    # as a seed must start from the same state in both runs).
    ref_case = copy.deepcopy(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cnnext.use_backend("cython"):
            how, got = _run(case)
        err = _mutated(snap)
        if err:
            return {"status": "mutated", "detail": err}
        if how == "raise":
            status, detail = _classify_exception(case, got)
            return {"status": status, "detail": detail}
        # The reference is slow on purpose (e.g. it loops over every tap of
        # a 2**31-row pooling window): give it REF_SECONDS, then call the
        # case unverified rather than hang.
        signal.signal(signal.SIGALRM, _too_slow)
        signal.alarm(REF_SECONDS)
        try:
            with cnnext.use_backend("numpy"):
                how_ref, want = _run(ref_case)
        except _TooSlow as exc:
            how_ref, want = "raise", exc
        finally:
            signal.alarm(0)
    if how_ref == "raise":
        if isinstance(want, (MemoryError, _TooSlow)):
            detail = f"reference: {type(want).__name__} {want}"[:200]
            return {"status": "unverified", "detail": detail}
        return {
            "status": "backend-disagree",
            "detail": f"cython returned, numpy backend raised {type(want).__name__}: {want}",
        }
    err = _compare(got, want, overflow=_near_max(ref_case))
    if err:
        return {"status": "mismatch", "detail": err}
    return {"status": "ok", "detail": ""}


# --------------------------------------------------------------------------
# protocol: 4-byte big-endian length + pickle, both ways
# --------------------------------------------------------------------------


def _read(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    return pickle.loads(stream.read(n))


def _write(stream, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def main():
    threads = int(os.environ.get("CNNEXT_FUZZ_THREADS", "2"))
    cnnext.set_num_threads(threads)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    # Nothing else may write to the protocol stream.
    sys.stdout = sys.stderr
    _write(out, {"status": "ready", "pid": os.getpid()})
    while True:
        case = _read(inp)
        if case is None:
            return
        try:
            verdict = evaluate(case)
        except BaseException as exc:  # noqa: BLE001 - a worker bug, reported as such
            verdict = {"status": "worker-error", "detail": traceback.format_exc()[-2000:]}
            if isinstance(exc, KeyboardInterrupt):
                raise
        _write(out, verdict)


if __name__ == "__main__":
    main()
