"""Fuzz every public function of cnnext.functional and every layer of cnnext.nn.

Bad input must never crash the process or return a wrong answer: every case
either returns what the numpy backend (:mod:`cnnext.reference`) returns, or
raises ValueError/TypeError whose message starts with the function's name and
names the offending parameter, or raises MemoryError for a genuinely too
large request before allocating it.

The calls run in a subprocess (``tests/fuzz_worker.py``) with a capped
address space, so a segfault, an abort or a runaway allocation fails the
test with the case that caused it instead of killing pytest (or the shared
machine).  Two sources of cases:

* a fixed corpus of nasty cases (:data:`CORPUS`): wrong ndim, mismatched
  channels and indices, zero/negative sizes, kernels larger than the padded
  input, sizes near 2**31 and 2**63, padding 10**12, bool/float/NaN/inf
  hyper-parameters, complex/object/str/bool arrays, zero-size axes;
* hypothesis: a valid call of each function or layer with at most one
  argument replaced by something nasty.

The case count and the outcome counts are printed at the end of the module
(``pytest -rA tests/test_fuzz.py`` or ``-s`` shows them).
"""
import collections
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnext import functional as F
from cnnext import nn

WORKER = Path(__file__).with_name("fuzz_worker.py")
CASE_TIMEOUT = 60.0  # seconds; a case that takes longer is reported as a hang

#: Outcomes that are fine; everything else fails the test.
GOOD = {"ok", "unverified", "error", "memory", "alloc"}

#: Hypothesis examples per function / layer: 6x the profile's count (150 in
#: the default ``ci`` profile, 1800 with ``HYPOTHESIS_PROFILE=dev``).
EXAMPLES = 6 * settings.default.max_examples


# --------------------------------------------------------------------------
# known kernel bugs (reported; the strict xfail below flips when fixed)
# --------------------------------------------------------------------------


def _conv_prepared_elems(case):
    """Elements of the conv kernels' per-thread "prepared sample" for a case.

    The forward and weight-gradient kernels copy each padded sample into
    ``stride_h * stride_w`` phase planes of ``ceil((H + 2p)/s)`` rows:
    ``sh*sw*C*ceil((H+2ph)/sh)*ceil((W+2pw)/sw)`` elements, about ``sh*sw``
    times the padded image when the stride exceeds the padded input.  None
    when the case is not a plain-int conv2d/conv2d_backward call.
    """
    if case.get("kind") != "call" or case["fn"] not in ("conv2d", "conv2d_backward"):
        return None
    args = dict(zip(SIGNATURES[case["fn"]], case["args"]))
    args.update(case["kwargs"])
    x = args.get("x")
    if not isinstance(x, np.ndarray) or x.ndim not in (3, 4):
        return None
    try:
        s = _as_pair(args.get("stride", 1))
        p = _as_pair(args.get("padding", 0))
    except (TypeError, ValueError):
        return None
    C, H, W = x.shape[-3:]
    return s[0] * s[1] * C * -(-(H + 2 * p[0]) // s[0]) * -(-(W + 2 * p[1]) // s[1])


def _as_pair(v):
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(type(e) is int for e in v):
        return tuple(v)
    if type(v) is int:
        return (v, v)
    raise TypeError


def _case_name(case):
    return case.get("fn") or case.get("cls")


#: Known bugs outside this test's files, reported to the maintainers: name ->
#: (predicate on (case, verdict), minimal reproducer).  A matching outcome
#: is counted, not failed; ``test_known_bug_still_reproduces`` (strict
#: xfail) turns red when one is fixed, so its entry can be deleted.
KNOWN_BUGS: dict = {
    # (A float32 weight gradient that overflows in its float32 partial sums
    # where the float64 reference's total is finite is not listed: PyTorch
    # accumulates in float32 too, and the worker compares only the positions
    # both results keep finite when an input is within 16x of the dtype's
    # maximum.)
}

#: The reproducers of the fixed bugs: each must now give a good verdict.
FIXED_BUGS = {
    "conv-scratch-stride":
        lambda: call("conv2d", np.ones((1, 1, 28, 28)), np.ones((1, 1, 3, 3)), stride=10**5),
    # Padding near 2**31 with several outputs: the padded sample cannot be
    # materialised, so such geometries take a padding-free gather path.
    "conv-scratch-huge-padding":
        lambda: call("conv2d", np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)),
                     stride=2**31 - 1, padding=2**31 - 1),
    "pool-backward-unbatched-numpy-backend":
        lambda: call("max_pool2d_backward", np.ones((1, 1, 1)), np.zeros((1, 1, 1), np.int64),
                     (1, 2, 2)),
    "softmax-empty-axis": lambda: call("softmax", np.zeros((2, 0)), 1),
    "flatten-empty-batch": lambda: layer("Flatten", calls=[("forward", [np.zeros((0, 2, 3))])]),
    "huge-weight-constructor":
        lambda: layer("Conv2D", [1, 1, 2**31 - 1], {"seed": 0}, names=("kernel_size",)),
    "zero-spatial-size-numpy-backend":
        lambda: call("full_conv2d", np.zeros((1, 1, 1, 0)), np.ones((1, 1, 2, 1))),
}


@pytest.mark.parametrize("name", sorted(FIXED_BUGS))
def test_fixed_bug_stays_fixed(worker, name):
    case = FIXED_BUGS[name]()
    verdict = worker.run(case)
    assert verdict["status"] in GOOD, f"{describe_case(case)}: {verdict}"


@pytest.mark.xfail(strict=True, reason="known bug, reported; delete its KNOWN_BUGS entry")
@pytest.mark.parametrize("name", sorted(KNOWN_BUGS))
def test_known_bug_still_reproduces(worker, name):
    _, repro = KNOWN_BUGS[name]
    case = repro()
    verdict = worker.run(case)
    assert verdict["status"] in GOOD, f"{describe_case(case)}: {verdict}"


def known_bug(case, verdict):
    """Name of the known, reported bug that explains ``verdict``, or None."""
    if verdict["status"] in GOOD:
        return None
    for name, (pred, _) in KNOWN_BUGS.items():
        if pred(case, verdict):
            return name
    return None


# --------------------------------------------------------------------------
# the worker
# --------------------------------------------------------------------------


class Worker:
    """A ``fuzz_worker.py`` subprocess; restarted after it dies."""

    def __init__(self):
        self.proc = None
        self.stderr = None
        self.started = 0

    def _start(self):
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
        )
        self.started += 1
        hello = self._receive(120.0)
        if not hello or hello.get("status") != "ready":
            raise RuntimeError(f"fuzz worker failed to start: {self._stderr_tail()}")

    def _stderr_tail(self):
        self.stderr.seek(0)
        return self.stderr.read()[-1500:].decode("utf-8", "replace")

    def _receive(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return "timeout"
        head = self.proc.stdout.read(4)
        if len(head) < 4:
            return None
        (n,) = struct.unpack(">I", head)
        data = self.proc.stdout.read(n)
        return pickle.loads(data) if len(data) == n else None

    def run(self, case):
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        data = pickle.dumps(case, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
            verdict = self._receive(CASE_TIMEOUT)
        except BrokenPipeError:
            verdict = None
        if verdict == "timeout":
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            return {"status": "timeout", "detail": f"no answer within {CASE_TIMEOUT} s"}
        if verdict is None:
            rc = self.proc.wait()
            how = (
                f"signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exit code {rc}"
            )
            detail = f"worker died with {how}; stderr: {self._stderr_tail()}"
            self.proc = None
            return {"status": "crash", "detail": detail}
        return verdict

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


STATS = collections.Counter()
KNOWN = collections.Counter()


@pytest.fixture(scope="module")
def worker(request):
    w = Worker()
    yield w
    w.close()
    total = sum(STATS.values())
    crashes = STATS["crash"]
    line = (
        f"fuzz: {total} cases in {w.started} worker process(es); outcomes "
        f"{dict(sorted(STATS.items()))}; {crashes} crashed"
        + (f" (known, reported kernel bugs: {dict(KNOWN)})" if KNOWN else "")
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(line)
    else:  # pragma: no cover
        print(line)


def describe(value, depth=0):
    """A short, reproducible repr (arrays: shape, dtype, flags, small contents)."""
    if isinstance(value, np.ndarray):
        flags = []
        if not value.flags.c_contiguous:
            flags.append("F-order" if value.flags.f_contiguous else "strided")
        if not value.flags.writeable:
            flags.append("read-only")
        body = ""
        if value.size <= 12 and value.dtype.kind != "O":
            body = f" {value.tolist()!r}"
        return f"array(shape={value.shape}, dtype={value.dtype}{', ' if flags else ''}" \
               f"{', '.join(flags)}){body}"
    if isinstance(value, (list, tuple)) and depth < 3:
        inner = ", ".join(describe(v, depth + 1) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={describe(v, depth + 1)}" for k, v in value.items()) + "}"
    r = repr(value)
    return r if len(r) < 80 else r[:77] + "..."


def describe_case(case):
    if case["kind"] == "call":
        args = [describe(a) for a in case["args"]]
        args += [f"{k}={describe(v)}" for k, v in case["kwargs"].items()]
        return f"F.{case['fn']}({', '.join(args)})"
    ctor = [describe(a) for a in case["ctor"]] + [
        f"{k}={describe(v)}" for k, v in case["ctor_kw"].items()
    ]
    calls = "".join(
        f".{m}({', '.join(describe(a) for a in args)})" for m, args in case["calls"]
    )
    return f"nn.{case['cls']}({', '.join(ctor)}){calls}"


def check(worker, case):
    """Run one case; fail with the case and the verdict unless the outcome is good."""
    verdict = worker.run(case)
    STATS[verdict["status"]] += 1
    if verdict["status"] in GOOD:
        return verdict
    reason = known_bug(case, verdict)
    if reason is not None:
        KNOWN[reason] += 1
        return verdict
    pytest.fail(
        f"{verdict['status']}: {describe_case(case)}\n{verdict['detail']}", pytrace=False
    )


def call(fn, *args, names=None, **kwargs):
    return {"kind": "call", "fn": fn, "args": list(args), "kwargs": kwargs, "names": names}


#: The functional calls behind each layer: their names may head an error
#: raised from inside ``forward``/``backward`` (e.g. ``conv2d_backward:
#: grad_out.shape must be ...``).
LAYER_INNER = {
    "Conv2D": ("conv2d", "conv2d_backward"), "Dense": ("linear", "linear_backward"),
    "ConvTranspose2D": ("conv_transpose2d", "conv_transpose2d_backward"),
    "Conv1D": ("conv1d", "conv1d_backward"),
    "MaxPool2D": ("max_pool2d", "max_pool2d_backward"),
    "AvgPool2D": ("avg_pool2d", "avg_pool2d_backward"),
    "MaxPool1D": ("max_pool1d", "max_pool1d_backward"),
    "AvgPool1D": ("avg_pool1d", "avg_pool1d_backward"),
    "AdaptiveAvgPool2D": ("adaptive_avg_pool2d", "adaptive_avg_pool2d_backward"),
    "AdaptiveMaxPool2D": ("adaptive_max_pool2d", "adaptive_max_pool2d_backward"),
    "MaxUnpool2D": ("max_unpool2d", "max_unpool2d_backward"),
    "LeakyReLU": ("leaky_relu", "leaky_relu_backward"), "ReLU": ("relu", "relu_backward"),
    "Sigmoid": ("sigmoid", "sigmoid_backward"), "Tanh": ("tanh", "tanh_backward"),
    "Softmax": ("softmax", "softmax_backward"),
}


def layer(cls, ctor=(), ctor_kw=None, calls=(), names=None, allow_runtime=False, inner=None):
    if inner is None:
        inner = LAYER_INNER.get(cls, ())
    return {
        "kind": "layer", "cls": cls, "ctor": list(ctor), "ctor_kw": dict(ctor_kw or {}),
        "calls": [(m, list(a)) for m, a in calls], "names": names,
        "allow_runtime": allow_runtime, "inner": tuple(inner),
    }


LIKE = ("__like_last__", 7, 1.0)  # a random upstream gradient shaped like the output

# --------------------------------------------------------------------------
# signatures and argument kinds
# --------------------------------------------------------------------------

SIGNATURES = {
    "conv2d": ("x", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv2d_backward": ("grad_out", "x", "weight", "stride", "padding", "dilation", "groups",
                        "bias"),
    "conv_transpose2d": ("x", "weight", "bias", "stride", "padding", "output_padding",
                         "groups", "dilation"),
    "conv_transpose2d_backward": ("grad_out", "x", "weight", "stride", "padding",
                                  "output_padding", "groups", "dilation", "bias"),
    "conv1d": ("x", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv1d_backward": ("grad_out", "x", "weight", "stride", "padding", "dilation", "groups",
                        "bias"),
    "full_conv2d": ("x", "weight"),
    "max_pool2d": ("x", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                   "return_indices"),
    "max_pool2d_backward": ("grad_out", "indices", "input_shape"),
    "avg_pool2d": ("x", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                   "divisor_override"),
    "avg_pool2d_backward": ("grad_out", "input_shape", "kernel_size", "stride", "padding",
                            "ceil_mode", "count_include_pad", "divisor_override"),
    "adaptive_avg_pool2d": ("x", "output_size"),
    "adaptive_avg_pool2d_backward": ("grad_out", "input_shape"),
    "adaptive_max_pool2d": ("x", "output_size", "return_indices"),
    "adaptive_max_pool2d_backward": ("grad_out", "indices", "input_shape"),
    "max_unpool2d": ("x", "indices", "kernel_size", "stride", "padding", "output_size"),
    "max_unpool2d_backward": ("grad_out", "indices"),
    "max_pool1d": ("x", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                   "return_indices"),
    "max_pool1d_backward": ("grad_out", "indices", "input_shape"),
    "avg_pool1d": ("x", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    "avg_pool1d_backward": ("grad_out", "input_shape", "kernel_size", "stride", "padding",
                            "ceil_mode", "count_include_pad"),
    "linear": ("x", "weight", "bias"),
    "linear_backward": ("grad_out", "x", "weight", "bias"),
    "relu": ("x",),
    "relu_backward": ("grad_out", "x"),
    "leaky_relu": ("x", "negative_slope"),
    "leaky_relu_backward": ("grad_out", "x", "negative_slope"),
    "sigmoid": ("x",),
    "sigmoid_backward": ("grad_out", "y"),
    "tanh": ("x",),
    "tanh_backward": ("grad_out", "y"),
    "softmax": ("x", "axis"),
    "softmax_backward": ("grad_out", "y", "axis"),
    "log_softmax": ("x", "axis"),
    "log_softmax_backward": ("grad_out", "y", "axis"),
    "softmax_cross_entropy": ("logits", "labels"),
    "batch_norm": ("x", "running_mean", "running_var", "weight", "bias", "training",
                   "momentum", "eps"),
    "batch_norm_backward": ("grad_out", "x", "running_mean", "running_var", "weight",
                            "training", "eps"),
}

#: Words an error about a malformed *array* may name instead of the array
#: itself (a wrong shape can surface as a geometry or channel error).
ARRAY_WORDS = (
    "x", "weight", "bias", "grad_out", "y", "logits", "labels", "indices", "input",
    "kernel", "output", "channels", "features", "running_mean", "running_var",
)


def test_every_public_function_is_fuzzed():
    missing = sorted(set(F.__all__) - set(SIGNATURES))
    assert not missing, f"add fuzz signatures/strategies for {missing}"


# --------------------------------------------------------------------------
# nasty values
# --------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

#: Replacements for an int-or-pair hyper-parameter.  Valid ones must work,
#: the rest must raise naming the parameter.
NASTY_SIZES = [
    0, -1, -(2**63), 2**31 - 1, 2**31, 2**32 + 1, 2**63 - 1, 2**63, 2**64, 10**12, 10**30,
    True, False, np.True_, 2.0, 2.5, NAN, INF, -INF, np.float64(2.0), np.float32(NAN),
    np.int64(2), np.uint8(3), np.int32(-1), np.int64(2**62), None, "2", b"2", 2j,
    (2,), (2, 2, 2), (), (2, "a"), (2, 2.0), (True, 1), (1, NAN), (2**31, 1), (-1, 1),
    [2, 1], np.array([2, 1]), np.array([2.0, 1.0]), np.array([[2, 1]]), np.array(2),
    np.array([2**40, 1]), object(),
]

#: Replacements for array arguments (besides shape/dtype/layout transforms).
NASTY_ARRAY_VALUES = [None, 3.0, "abc", [[1, 2], [3]], [], object(), 1j]

ODD_DTYPES = [
    np.complex64, np.complex128, object, "U3", "S3", np.bool_, np.float16, np.int8,
    np.uint8, np.int64, np.uint64, "datetime64[s]", "timedelta64[ms]", np.longdouble,
]


@st.composite
def nasty_array(draw, a):
    """A transformation of the valid array ``a`` (some still valid, most not)."""
    how = draw(st.sampled_from([
        "ndim+", "ndim-", "dim", "zero", "dtype", "value", "layout", "nonfinite", "huge",
    ]))
    if how == "ndim+":
        return a[None]
    if how == "ndim-":
        return a.reshape(a.shape[1:]) if a.ndim and a.shape[0] == 1 else a.reshape(-1)
    if how == "dim" and a.ndim:
        ax = draw(st.integers(0, a.ndim - 1))
        shape = list(a.shape)
        shape[ax] = draw(st.integers(0, shape[ax] + 3))
        return np.resize(a, shape) if a.size else np.zeros(shape, a.dtype)
    if how == "zero" and a.ndim:
        ax = draw(st.integers(0, a.ndim - 1))
        shape = list(a.shape)
        shape[ax] = 0
        return np.zeros(shape, a.dtype)
    if how == "dtype":
        dt = draw(st.sampled_from(ODD_DTYPES))
        if np.dtype(dt).kind in "OUS":
            return a.astype(dt)
        with np.errstate(all="ignore"):
            return a.astype(dt)
    if how == "value":
        return draw(st.sampled_from(NASTY_ARRAY_VALUES))
    if how == "layout":
        kind = draw(st.sampled_from(["F", "readonly", "strided", "list"]))
        if kind == "F":
            return np.asfortranarray(a)
        if kind == "readonly":
            b = a.copy()
            b.flags.writeable = False
            return b
        if kind == "strided":
            big = np.repeat(a, 2, axis=-1) if a.ndim else a
            return big[..., ::2] if a.ndim else big
        return a.tolist()
    if how in ("nonfinite", "huge") and a.size and a.dtype.kind == "f":
        b = a.copy()
        flat = b.reshape(-1)
        k = draw(st.integers(1, max(1, flat.size // 3)))
        pos = draw(st.lists(st.integers(0, flat.size - 1), min_size=k, max_size=k))
        if how == "nonfinite":
            flat[pos] = draw(st.sampled_from([NAN, INF, -INF]))
        else:
            flat[pos] = np.finfo(b.dtype).max
        return b
    return a


def arr(draw, shape, dtype=None, label="arr"):
    dt = dtype or draw(st.sampled_from([np.float32, np.float64, np.float32, np.int64]),
                       label=f"{label} dtype")
    seed = draw(st.integers(0, 2**32 - 1), label=f"{label} seed")
    r = np.asarray(np.random.default_rng(seed).standard_normal(shape) * 3)
    return r.astype(dt)


def mutate(draw, fn, args, kinds):
    """Replace at most one argument of ``args`` (a dict) by something nasty."""
    names = None
    if draw(st.booleans(), label="mutate"):
        target = draw(st.sampled_from(sorted(kinds)), label="target")
        kind = kinds[target]
        if kind == "array":
            value = args[target]
            if value is None:
                value = np.zeros(3)
            args[target] = draw(nasty_array(value))
            names = ARRAY_WORDS
        elif kind == "size":
            args[target] = draw(st.sampled_from(NASTY_SIZES))
            names = (target,)
        elif kind == "bool":
            args[target] = draw(st.sampled_from([0, 1, None, "yes", 1.0, NAN, np.array([True])]))
            names = (target,)
        elif kind == "real":
            args[target] = draw(st.sampled_from(
                [NAN, INF, -INF, True, None, "0.1", 1j, np.float32(NAN), 1e308,
                 -3, np.array(0.1), [0.1]]))
            names = (target,)
        elif kind == "axis":
            args[target] = draw(st.sampled_from(
                [2, -3, 2**63, -(2**63), 1.0, True, None, "1", (0, 1), np.int64(1)]))
            names = (target,)
        elif kind == "shape":
            args[target] = draw(st.sampled_from([
                None, 5, "abc", (), (1,), (1, 1, 1, 1, 1), (2**31, 1, 1, 1), (1, 1, 2**31, 2**31),
                (1, 1, 2**40, 2**40), (1, 1, -1, 4), (1, 1, 4.0, 4), (1, 1, True, 4),
                (2**63, 1, 1, 1), np.array([1, 1, 4, 4]), [1, 1, 4, 4], {1: 2},
                (1, 1, 0, 0), (0, 1, 4, 4),
            ]))
            # A well-formed but inconsistent shape surfaces as a geometry
            # error ("input size 0, kernel_size 1, ...").
            names = (target, "input size")
    ordered = SIGNATURES[fn]
    return {"kind": "call", "fn": fn, "args": [args[n] for n in ordered], "kwargs": {},
            "names": names}


def conv_geom(draw):
    g = {}
    for key, lo, hi in (("s", 1, 3), ("p", 0, 2), ("d", 1, 2), ("k", 1, 3)):
        a = draw(st.integers(lo, hi), label=key + "h")
        b = draw(st.integers(lo, hi), label=key + "w")
        g[key] = a if a == b and draw(st.booleans()) else (a, b)
    return g


def _pair2(v):
    return v if isinstance(v, tuple) else (v, v)


def conv_out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@st.composite
def conv_case(draw, fn):
    g = conv_geom(draw)
    if fn == "full_conv2d":  # no groups
        G, N, C, Co = 1, draw(st.integers(0, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    else:
        G = draw(st.sampled_from([1, 1, 2, 3]), label="groups")
        N = draw(st.integers(0, 2))
        C, Co = G * draw(st.integers(1, 2)), G * draw(st.integers(1, 2))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    kh, kw = _pair2(g["k"])
    dt = draw(st.sampled_from([np.float32, np.float64]))
    one_d = fn.startswith("conv1d")
    if one_d:  # (N, C, L) images and (C_out, C/G, k) kernels
        H, kh = 1, 1
        g = {key: _pair2(v)[1] for key, v in g.items()}
    x = arr(draw, (N, C, H, W), dt, "x")
    if one_d:
        x = x[:, :, 0]
    if N and draw(st.booleans()):
        x = x[0]  # unbatched
    kinds = {"x": "array", "weight": "array", "stride": "size", "padding": "size",
             "dilation": "size", "groups": "size"}
    if fn in ("conv2d", "conv2d_backward", "conv1d", "conv1d_backward"):
        wshape = (Co, C // G, kh, kw) if not one_d else (Co, C // G, kw)
        w = arr(draw, wshape, dt, "w")
        pad = g["p"]
        if draw(st.integers(0, 3)) == 0:
            pad = draw(st.sampled_from(["same", "valid"]))
        common = dict(weight=w, stride=g["s"], padding=pad, dilation=g["d"], groups=G)
        if fn in ("conv2d", "conv1d"):
            b = arr(draw, (Co,), dt, "b") if draw(st.booleans()) else None
            args = dict(x=x, bias=b, **common)
            kinds["bias"] = "array"
        else:
            s, d = _pair2(g["s"]), _pair2(g["d"])
            if pad == "same":
                p, oh, ow = None, H, W
            else:
                p = (0, 0) if pad == "valid" else _pair2(pad)
                oh, ow = conv_out(H, kh, s[0], p[0], d[0]), conv_out(W, kw, s[1], p[1], d[1])
            gshape = (N, Co, max(oh, 1), max(ow, 1))
            if one_d:
                gshape = gshape[:2] + gshape[3:]
            go = arr(draw, gshape[1:] if x.ndim < len(gshape) else gshape, dt, "g")
            args = dict(grad_out=go, x=x, bias=draw(st.booleans()), **common)
            kinds.update(grad_out="array", bias="bool")
    elif fn in ("conv_transpose2d", "conv_transpose2d_backward"):
        w = arr(draw, (C, Co // G, kh, kw), dt, "w")
        op = draw(st.integers(0, 1))
        args = dict(x=x, weight=w, stride=g["s"], padding=g["p"], output_padding=op,
                    groups=G, dilation=g["d"])
        kinds.update(output_padding="size")
        if fn == "conv_transpose2d":
            args["bias"] = arr(draw, (Co,), dt, "b") if draw(st.booleans()) else None
            kinds["bias"] = "array"
        else:
            s, p, d = _pair2(g["s"]), _pair2(g["p"]), _pair2(g["d"])
            oh, ow = ((n - 1) * s_ - 2 * p_ + d_ * (k - 1) + op + 1
                      for n, s_, p_, d_, k in zip((H, W), s, p, d, (kh, kw)))
            gshape = (N, Co, max(oh, 1), max(ow, 1))[4 - x.ndim:]
            args.update(grad_out=arr(draw, gshape, dt, "g"), bias=draw(st.booleans()))
            kinds.update(grad_out="array", bias="bool")
    else:  # full_conv2d
        w = arr(draw, (C, Co, kh, kw), dt, "w")
        args = dict(x=x, weight=w)
        kinds = {"x": "array", "weight": "array"}
    valid = _valid_conv_geometry(fn, H, W, kh, kw, g, args)
    case = mutate(draw, fn, args, kinds)
    if case["names"] and not valid:
        # The unmutated geometry is already invalid: its own error may come first.
        case["names"] = tuple(case["names"]) + ("kernel is larger", "output size",
                                                "padding='same'")
    return case


def _valid_conv_geometry(fn, H, W, kh, kw, g, args):
    """Whether a conv_case's unmutated geometry has a non-empty output."""
    s, d = _pair2(g["s"]), _pair2(g["d"])
    pad = args.get("padding", g["p"])
    if fn in ("conv_transpose2d", "conv_transpose2d_backward"):
        p, op = _pair2(g["p"]), args["output_padding"]
        return all((n - 1) * s_ - 2 * p_ + d_ * (k - 1) + op + 1 >= 1
                   for n, s_, p_, d_, k in zip((H, W), s, p, d, (kh, kw)))
    if fn == "full_conv2d":
        return True
    if pad == "same":
        return s == (1, 1)
    p = (0, 0) if pad == "valid" else _pair2(pad)
    return all(conv_out(n, k, s_, p_, d_) >= 1
               for n, k, s_, p_, d_ in zip((H, W), (kh, kw), s, p, d))


def _pool_idx(draw, shape, size):
    """Random int indices in [0, size) of ``shape``, sometimes out of range or
    of another integer dtype."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    idx = rng.integers(0, max(1, size), size=shape)
    if draw(st.booleans()):
        idx = idx + draw(st.sampled_from([-size, size, 2**62, -1]))
    return idx.astype(draw(st.sampled_from([np.int64, np.int32, np.uint8, np.int64])))


def _pool_out(size, k, s, p, d, ceil_mode):
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return max(1, out)


def _pool_input(draw, shape):
    """A pooling input of ``shape`` (float or int), sometimes with ties (as
    after a ReLU), sometimes one unbatched sample; and whether it is."""
    dt = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    x = arr(draw, shape, dt, "x")
    if draw(st.booleans()):
        x = np.maximum(np.round(x), 0).astype(x.dtype)
    unbatched = shape[0] > 0 and draw(st.booleans())
    return (x[0] if unbatched else x), unbatched


@st.composite
def pool_case(draw, fn):
    one_d = fn in ("max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward")
    kh, kw = (1 if one_d else draw(st.integers(1, 3))), draw(st.integers(1, 3))
    if one_d:
        k = draw(st.sampled_from([kw, (kw,)]))
        s = draw(st.one_of(st.none(), st.integers(1, 3)))
        p = draw(st.sampled_from([0, kw // 2, (kw // 2,)]))
        d = draw(st.integers(1, 2)) if "max" in fn else 1
    else:
        k = kh if kh == kw and draw(st.booleans()) else (kh, kw)
        s = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3),
                                                                    st.integers(1, 3))))
        p = draw(st.sampled_from([0, (0, 0), (kh // 2, kw // 2), kh // 2 if kh == kw else 0]))
        d = draw(st.sampled_from([1, 2, (1, 2)])) if "max" in fn else 1
    cm = draw(st.booleans())
    cip = draw(st.booleans())
    dov = draw(st.sampled_from([None, None, 3, -2]))
    N, C = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    H, W = (1 if one_d else draw(st.integers(1, 7))), draw(st.integers(1, 9))
    x, unbatched = _pool_input(draw, (N, C, H, W))
    if one_d:
        x = x[..., 0, :]
    kk = (1, k if isinstance(k, int) else k[0]) if one_d else _pair2(k)
    ss = kk if s is None else ((1, s) if one_d else _pair2(s))
    pp = (0, p if isinstance(p, int) else p[0]) if one_d else _pair2(p)
    dd = (1, d) if one_d else _pair2(d)
    oh = _pool_out(H, kk[0], ss[0], pp[0], dd[0], cm)
    ow = _pool_out(W, kk[1], ss[1], pp[1], dd[1], cm)
    in_shape = x.shape
    gshape = (N, C, oh, ow)[1 if unbatched else 0:]
    if one_d:
        gshape = gshape[:-2] + (ow,)
    sizes = {"kernel_size": "size", "stride": "size", "padding": "size"}
    if fn in ("max_pool2d", "max_pool1d"):
        args = dict(x=x, kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=cm,
                    return_indices=draw(st.booleans()))
        kinds = dict(sizes, x="array", dilation="size", ceil_mode="bool", return_indices="bool")
    elif fn in ("avg_pool2d", "avg_pool1d"):
        args = dict(x=x, kernel_size=k, stride=s, padding=p, ceil_mode=cm, count_include_pad=cip)
        kinds = dict(sizes, x="array", ceil_mode="bool", count_include_pad="bool")
        if fn == "avg_pool2d":
            args["divisor_override"] = dov
            kinds["divisor_override"] = "size"
    elif fn in ("avg_pool2d_backward", "avg_pool1d_backward"):
        args = dict(grad_out=arr(draw, gshape, None, "g"), input_shape=in_shape, kernel_size=k,
                    stride=s, padding=p, ceil_mode=cm, count_include_pad=cip)
        kinds = dict(sizes, grad_out="array", input_shape="shape", ceil_mode="bool",
                     count_include_pad="bool")
        if fn == "avg_pool2d_backward":
            args["divisor_override"] = dov
            kinds["divisor_override"] = "size"
    else:  # max_pool2d_backward, max_pool1d_backward
        args = dict(grad_out=arr(draw, gshape, None, "g"),
                    indices=_pool_idx(draw, gshape, H * W), input_shape=in_shape)
        kinds = {"grad_out": "array", "indices": "array", "input_shape": "shape"}
    return mutate(draw, fn, args, kinds)


@st.composite
def adaptive_case(draw, fn):
    N, C = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    o = draw(st.one_of(st.integers(0, 4),
                       st.tuples(st.one_of(st.none(), st.integers(0, 9)),
                                 st.one_of(st.none(), st.integers(1, 9)))))
    oh, ow = (o, o) if isinstance(o, int) else (H if o[0] is None else o[0],
                                                 W if o[1] is None else o[1])
    x, unbatched = _pool_input(draw, (N, C, H, W))
    gshape = (N, C, oh, ow)[1 if unbatched else 0:]
    if fn == "adaptive_avg_pool2d":
        args, kinds = dict(x=x, output_size=o), {"x": "array", "output_size": "size"}
    elif fn == "adaptive_max_pool2d":
        args = dict(x=x, output_size=o, return_indices=draw(st.booleans()))
        kinds = {"x": "array", "output_size": "size", "return_indices": "bool"}
    elif fn == "adaptive_avg_pool2d_backward":
        args = dict(grad_out=arr(draw, gshape, None, "g"), input_shape=x.shape)
        kinds = {"grad_out": "array", "input_shape": "shape"}
    else:  # adaptive_max_pool2d_backward
        args = dict(grad_out=arr(draw, gshape, None, "g"),
                    indices=_pool_idx(draw, gshape, H * W), input_shape=x.shape)
        kinds = {"grad_out": "array", "indices": "array", "input_shape": "shape"}
    return mutate(draw, fn, args, kinds)


@st.composite
def unpool_case(draw, fn):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = kh if kh == kw and draw(st.booleans()) else (kh, kw)
    s = draw(st.one_of(st.none(), st.integers(1, 3)))
    p = draw(st.sampled_from([0, (kh // 2, kw // 2)]))
    N, C = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dt = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    x = arr(draw, (N, C, H, W), dt, "x")
    kk, ss, pp = _pair2(k), _pair2(k if s is None else s), _pair2(p)
    oh, ow = ((H - 1) * ss[0] - 2 * pp[0] + kk[0], (W - 1) * ss[1] - 2 * pp[1] + kk[1])
    grow = draw(st.booleans())
    out = None
    if grow and ss[0] > 1 and ss[1] > 1:
        oh, ow = oh + 1, ow + 1
        out = draw(st.sampled_from([(oh, ow), [N, C, oh, ow]]))
    unbatched = N > 0 and draw(st.booleans())
    if unbatched:
        x = x[0]
        if isinstance(out, list):
            out = out[1:]
    idx = _pool_idx(draw, x.shape, max(1, oh) * max(1, ow))
    if fn == "max_unpool2d":
        args = dict(x=x, indices=idx, kernel_size=k, stride=s, padding=p, output_size=out)
        kinds = {"x": "array", "indices": "array", "kernel_size": "size", "stride": "size",
                 "padding": "size", "output_size": "shape"}
    else:
        gshape = x.shape[:-2] + (max(1, oh), max(1, ow))
        args = dict(grad_out=arr(draw, gshape, None, "g"), indices=idx)
        kinds = {"grad_out": "array", "indices": "array"}
    return mutate(draw, fn, args, kinds)


@st.composite
def elementwise_case(draw, fn):
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
    dt = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    names = SIGNATURES[fn]
    args = {}
    kinds = {}
    for n in names:
        if n in ("x", "y", "grad_out"):
            a = arr(draw, shape, dt, n)
            if n == "y" and fn in ("sigmoid_backward", "softmax_backward"):
                a = np.abs(a) / (1 + np.abs(a))
            if n == "y" and fn == "log_softmax_backward":
                a = -np.abs(a)
            args[n], kinds[n] = a, "array"
        elif n == "negative_slope":
            args[n], kinds[n] = draw(st.floats(-2, 2)), "real"
        elif n == "axis":
            nd = len(shape)
            args[n] = draw(st.integers(-nd, nd - 1)) if nd else -1
            kinds[n] = "axis"
    return mutate(draw, fn, args, kinds)


@st.composite
def linear_case(draw, fn):
    n, n_in, n_out = draw(st.integers(0, 4)), draw(st.integers(0, 5)), draw(st.integers(0, 4))
    dt = draw(st.sampled_from([np.float32, np.float64, np.int64]))
    x, w = arr(draw, (n, n_in), dt, "x"), arr(draw, (n_out, n_in), dt, "w")
    if fn == "linear":
        b = arr(draw, (n_out,), dt, "b") if draw(st.booleans()) else None
        args, kinds = dict(x=x, weight=w, bias=b), {"x": "array", "weight": "array",
                                                    "bias": "array"}
    else:
        g = arr(draw, (n, n_out), dt, "g")
        args = dict(grad_out=g, x=x, weight=w, bias=draw(st.booleans()))
        kinds = {"grad_out": "array", "x": "array", "weight": "array", "bias": "bool"}
    return mutate(draw, fn, args, kinds)


@st.composite
def xent_case(draw, fn):
    N, K = draw(st.integers(0, 5)), draw(st.integers(1, 5))
    z = arr(draw, (N, K), draw(st.sampled_from([np.float32, np.float64])), "z")
    z = z * draw(st.sampled_from([1, 1e4]))
    labels = np.random.default_rng(draw(st.integers(0, 99))).integers(0, K, N)
    if draw(st.booleans()):
        labels = labels.astype(draw(st.sampled_from([np.int8, np.uint64, np.float64, np.bool_])))
    if draw(st.booleans()) and N:
        labels = labels.astype(np.int64)
        labels[0] = draw(st.sampled_from([-1, K, 2**31, 255]))
    return mutate(draw, fn, dict(logits=z, labels=labels),
                  {"logits": "array", "labels": "array"})


@st.composite
def batch_norm_case(draw, fn):
    N, C = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    shape = (N, C) + tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=2)))
    training = draw(st.booleans())
    if training and np.prod(shape) == C:  # one value per channel: always an error
        shape = (2,) + shape[1:]
    dt = draw(st.sampled_from([np.float32, np.float64]))
    x = arr(draw, shape, draw(st.sampled_from([dt, dt, np.int64])), "x")
    if x.dtype == np.int64:
        dt = np.float64  # the compute dtype, which updated running statistics must have
    rm = arr(draw, (C,), dt, "rm") if not training or draw(st.booleans()) else None
    rv = np.abs(arr(draw, (C,), dt, "rv")) if rm is not None else None
    w = arr(draw, (C,), dt, "w") if draw(st.booleans()) else None
    args = dict(x=x, running_mean=rm, running_var=rv, weight=w, training=training,
                eps=draw(st.sampled_from([1e-5, 1e-3, 1.0])))
    kinds = {"x": "array", "running_mean": "array", "running_var": "array", "weight": "array",
             "training": "bool", "eps": "real"}
    if fn == "batch_norm":
        args.update(bias=arr(draw, (C,), dt, "b") if draw(st.booleans()) else None,
                    momentum=draw(st.sampled_from([0.0, 0.1, 1.0])))
        kinds.update(bias="array", momentum="real")
    else:
        args["grad_out"] = arr(draw, shape, dt, "g")
        kinds["grad_out"] = "array"
    case = mutate(draw, fn, args, kinds)
    if fn == "batch_norm" and case["args"][5] is True:
        case["inplace"] = (1, 2)  # the running statistics, updated by design
    return case


STRATEGIES = {}
for _fn in ("conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward",
            "conv1d", "conv1d_backward", "full_conv2d"):
    STRATEGIES[_fn] = conv_case(_fn)
for _fn in ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
            "max_pool1d", "max_pool1d_backward", "avg_pool1d", "avg_pool1d_backward"):
    STRATEGIES[_fn] = pool_case(_fn)
for _fn in ("adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
            "adaptive_max_pool2d_backward"):
    STRATEGIES[_fn] = adaptive_case(_fn)
for _fn in ("max_unpool2d", "max_unpool2d_backward"):
    STRATEGIES[_fn] = unpool_case(_fn)
for _fn in ("linear", "linear_backward"):
    STRATEGIES[_fn] = linear_case(_fn)
STRATEGIES["softmax_cross_entropy"] = xent_case("softmax_cross_entropy")
for _fn in ("batch_norm", "batch_norm_backward"):
    STRATEGIES[_fn] = batch_norm_case(_fn)
for _fn in SIGNATURES:
    STRATEGIES.setdefault(_fn, elementwise_case(_fn))

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    # Reproducible in CI (the default profile); a fresh random hunt otherwise.
    derandomize=os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("fn", sorted(fn for fn in SIGNATURES if hasattr(F, fn)))
def test_fuzz_functional(worker, fn):
    @FUZZ_SETTINGS
    @given(case=STRATEGIES[fn])
    def run(case):
        check(worker, case)

    run()


# --------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------


@st.composite
def layer_case(draw, cls):
    """A layer built with (possibly nasty) constructor arguments, then
    forward(x) and backward(random gradient), possibly with a nasty x or
    gradient, or backward before forward."""
    dt = draw(st.sampled_from([np.float32, np.float64]))
    N = draw(st.integers(0, 2))
    ctor, kw, kinds = [], {}, {}
    x_shape = (N, 2, 6, 5)
    inner = ()
    if cls == "Conv2D":
        k = draw(st.integers(1, 3))
        ctor = [2, draw(st.integers(1, 3)), k]
        kw = dict(stride=draw(st.integers(1, 2)), padding=draw(st.integers(0, 1)),
                  dilation=draw(st.integers(1, 2)), bias=draw(st.booleans()), dtype=dt, seed=0)
        kinds = dict(in_channels=("ctor", 0, "size"), out_channels=("ctor", 1, "size"),
                     kernel_size=("ctor", 2, "size"), stride=("kw", "stride", "size"),
                     padding=("kw", "padding", "size"), dilation=("kw", "dilation", "size"),
                     bias=("kw", "bias", "bool"), dtype=("kw", "dtype", "dtype"),
                     seed=("kw", "seed", "seed"), init=("kw", "init", "init"))
        if draw(st.booleans()):
            kw.update(groups=2, padding=draw(st.sampled_from(["same", "valid", 1])))
            if kw["padding"] == "same":
                kw["stride"] = 1
            kinds.update(groups=("kw", "groups", "size"))
            ctor = [2, 2 * draw(st.integers(1, 2)), k]
        inner = ("conv2d", "conv2d_backward")
    elif cls == "ConvTranspose2D":
        G = draw(st.sampled_from([1, 2]))
        ctor = [2, G * draw(st.integers(1, 2)), draw(st.integers(1, 3))]
        s = draw(st.integers(1, 2))
        kw = dict(stride=s, padding=draw(st.integers(0, 1)),
                  output_padding=draw(st.integers(0, s - 1)), groups=G,
                  dilation=draw(st.integers(1, 2)), bias=draw(st.booleans()), dtype=dt, seed=0)
        kinds = dict(in_channels=("ctor", 0, "size"), out_channels=("ctor", 1, "size"),
                     kernel_size=("ctor", 2, "size"), stride=("kw", "stride", "size"),
                     padding=("kw", "padding", "size"),
                     output_padding=("kw", "output_padding", "size"),
                     groups=("kw", "groups", "size"), dilation=("kw", "dilation", "size"),
                     bias=("kw", "bias", "bool"), dtype=("kw", "dtype", "dtype"),
                     seed=("kw", "seed", "seed"), init=("kw", "init", "init"))
        inner = ("conv_transpose2d", "conv_transpose2d_backward")
    elif cls == "Conv1D":
        G = draw(st.sampled_from([1, 2]))
        ctor = [2, G * draw(st.integers(1, 2)), draw(st.integers(1, 3))]
        pad = draw(st.sampled_from([0, 1, "same", "valid"]))
        kw = dict(stride=1 if pad == "same" else draw(st.integers(1, 2)), padding=pad,
                  dilation=draw(st.integers(1, 2)), groups=G, bias=draw(st.booleans()),
                  dtype=dt, seed=0)
        x_shape = (N, 2, 7)
        kinds = dict(in_channels=("ctor", 0, "size"), out_channels=("ctor", 1, "size"),
                     kernel_size=("ctor", 2, "size"), stride=("kw", "stride", "size"),
                     padding=("kw", "padding", "size"), dilation=("kw", "dilation", "size"),
                     groups=("kw", "groups", "size"), bias=("kw", "bias", "bool"),
                     dtype=("kw", "dtype", "dtype"), seed=("kw", "seed", "seed"),
                     init=("kw", "init", "init"))
        inner = ("conv1d", "conv1d_backward")
    elif cls == "Dense":
        ctor = [draw(st.integers(1, 5)), draw(st.integers(1, 4))]
        kw = dict(bias=draw(st.booleans()), dtype=dt, seed=1)
        x_shape = (N, ctor[0])
        kinds = dict(in_features=("ctor", 0, "size"), out_features=("ctor", 1, "size"),
                     bias=("kw", "bias", "bool"), dtype=("kw", "dtype", "dtype"),
                     seed=("kw", "seed", "seed"), init=("kw", "init", "init"))
        inner = ("linear", "linear_backward")
    elif cls in ("MaxPool2D", "AvgPool2D", "MaxPool1D", "AvgPool1D", "MaxUnpool2D"):
        k = draw(st.integers(1, 3))
        ctor = [k]
        kw = dict(stride=draw(st.sampled_from([None, 1, 2])), padding=draw(st.integers(0, k // 2)))
        kinds = dict(kernel_size=("ctor", 0, "size"), stride=("kw", "stride", "size"),
                     padding=("kw", "padding", "size"))
        if cls != "MaxUnpool2D":
            kw["ceil_mode"] = draw(st.booleans())
            kinds["ceil_mode"] = ("kw", "ceil_mode", "bool")
        if cls in ("MaxPool2D", "MaxPool1D"):
            kw["dilation"] = draw(st.integers(1, 2))
            kinds["dilation"] = ("kw", "dilation", "size")
        if cls in ("AvgPool2D", "AvgPool1D"):
            kw["count_include_pad"] = draw(st.booleans())
            kinds["count_include_pad"] = ("kw", "count_include_pad", "bool")
        if cls == "AvgPool2D":
            kw["divisor_override"] = draw(st.sampled_from([None, 2]))
            kinds["divisor_override"] = ("kw", "divisor_override", "size")
        if cls.endswith("1D"):
            x_shape = (N, 2, 9)
        inner = LAYER_INNER[cls]
    elif cls in ("AdaptiveAvgPool2D", "AdaptiveMaxPool2D"):
        ctor = [draw(st.sampled_from([1, 2, (3, None), (None, 1), (4, 7)]))]
        kinds = dict(output_size=("ctor", 0, "size"))
        inner = LAYER_INNER[cls]
    elif cls == "LeakyReLU":
        ctor = [draw(st.floats(0, 1))]
        kinds = dict(alpha=("ctor", 0, "real"))
        inner = ("leaky_relu", "leaky_relu_backward")
    elif cls == "Dropout":
        ctor = [draw(st.sampled_from([0.0, 0.3, 1.0]))]
        kw = dict(seed=3)
        kinds = dict(p=("ctor", 0, "prob"), seed=("kw", "seed", "seed"))
    elif cls == "Softmax":
        x_shape = (N, 4)
        kinds = dict(axis=("kw", "axis", "axis"))
        inner = ("softmax", "softmax_backward")
    elif cls in ("BatchNorm1D", "BatchNorm2D"):
        ctor = [2]
        if cls == "BatchNorm1D":
            x_shape = draw(st.sampled_from([(N, 2), (N, 2, 5)]))
        if x_shape == (1, 2):  # one value per channel: an error in training mode
            x_shape = (2, 2)
        kw = dict(eps=draw(st.sampled_from([1e-5, 0.1])),
                  momentum=draw(st.sampled_from([0.1, None, 1.0])),
                  affine=draw(st.booleans()), track_running_stats=draw(st.booleans()),
                  dtype=dt)
        kinds = dict(num_features=("ctor", 0, "size"), eps=("kw", "eps", "real"),
                     momentum=("kw", "momentum", "real"), affine=("kw", "affine", "bool"),
                     track_running_stats=("kw", "track_running_stats", "bool"),
                     dtype=("kw", "dtype", "dtype"))
        inner = (f"{cls}.forward", f"{cls}.backward")
    elif cls == "Residual":
        block = nn.Sequential(nn.Conv2D(2, 2, 3, padding=1, dtype=dt, seed=0),
                              nn.BatchNorm2D(2, dtype=dt), nn.ReLU())
        ctor = [block, draw(st.sampled_from([None, nn.Identity(),
                                             nn.Conv2D(2, 2, 1, dtype=dt, seed=1)]))]
        kinds = dict(block=("ctor", 0, "module"), shortcut=("ctor", 1, "module"))
        inner = ("Residual.forward", "Conv2D.forward", "Conv2D.backward", "BatchNorm2D.forward",
                 "BatchNorm2D.backward", "conv2d", "conv2d_backward", "relu", "relu_backward",
                 "ReLU.forward", "ReLU.backward")
    else:
        inner = {"ReLU": ("relu", "relu_backward"), "Sigmoid": ("sigmoid", "sigmoid_backward"),
                 "Tanh": ("tanh", "tanh_backward")}.get(cls, ())
    x = arr(draw, x_shape, dt, "x")
    # MaxUnpool2D takes the indices of a max pool as a second input.
    extra = [np.random.default_rng(0).integers(0, 4, x_shape)] if cls == "MaxUnpool2D" else []
    calls = [("forward", [x, *extra]), ("backward", [LIKE])]
    names = None
    what = draw(st.sampled_from(["none", "ctor", "x", "grad", "order", "mode"]))
    if what == "ctor" and kinds:
        param = draw(st.sampled_from(sorted(kinds)))
        where, key, kind = kinds[param]
        value = draw(st.sampled_from({
            "size": NASTY_SIZES,
            "bool": [0, 1, None, "yes", np.array([True])],
            "real": [NAN, INF, -INF, True, None, "0.1", 1j, -0.5, 1e308],
            "prob": [-0.1, 1.5, NAN, INF, True, None, "0.5", 1j],
            "dtype": [np.float16, np.int32, "complex", object, None, "float64", "nonsense",
                      np.dtype("f4")],
            "seed": [-1, 2**64, 1.5, True, "0", NAN, np.random.default_rng(0), np.int64(5),
                     np.random.RandomState(0)],
            "init": ["xavier", None, 1, "HE", "torch", "glorot"],
            "axis": [2, -3, 1.0, True, None, "1", np.int64(0)],
            "module": ["block", 1, np.zeros(3), nn.Module],
        }[kind]))
        if where == "ctor":
            ctor[key] = value
        else:
            kw[key] = value
        names = (param,)
    elif what == "x":
        calls[0] = ("forward", [draw(nasty_array(x)), *extra])
        names = ARRAY_WORDS + ("grad_y",)
    elif what == "grad":
        shape = draw(st.sampled_from(["bad", "dtype", "value"]))
        if shape == "bad":
            g = np.ones(draw(st.sampled_from([(1,), (N + 1, 1), (N, 2, 1, 1, 1), (0,)])))
        elif shape == "dtype":
            g = ("__like_last__", 3, 1j)
        else:
            g = draw(st.sampled_from(NASTY_ARRAY_VALUES))
        calls[1] = ("backward", [g])
        names = ARRAY_WORDS + ("grad_y",)
    elif what == "order":
        calls = [("backward", [np.ones(x_shape, dt)])]
        names = ("forward",)
    elif what == "mode":
        calls.insert(0, ("train", [draw(st.sampled_from([True, False, 0, None, "eval"]))]))
        names = ("mode",)
    return layer(cls, ctor, kw, calls, names=names, allow_runtime=(what == "order"),
                 inner=inner)


LAYERS = ["Conv2D", "Dense", "MaxPool2D", "AvgPool2D", "MaxPool1D", "AvgPool1D",
          "AdaptiveAvgPool2D", "AdaptiveMaxPool2D", "MaxUnpool2D", "Flatten", "ReLU",
          "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Dropout"]
LAYERS += ["ConvTranspose2D", "Conv1D"]
LAYERS += ["BatchNorm1D", "BatchNorm2D", "Identity", "Residual"]


def test_every_layer_is_fuzzed():
    layers = {
        name for name in nn.__all__
        if isinstance(getattr(nn, name), type) and issubclass(getattr(nn, name), nn.Module)
    }
    missing = sorted(layers - set(LAYERS) - {"Module", "Sequential"})
    assert not missing, f"add fuzz strategies for {missing}"


@pytest.mark.parametrize("cls", LAYERS)
def test_fuzz_layers(worker, cls):
    @FUZZ_SETTINGS
    @given(case=layer_case(cls))
    def run(case):
        check(worker, case)

    run()


# --------------------------------------------------------------------------
# the fixed corpus
# --------------------------------------------------------------------------


def _corpus():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 2)).astype(np.float32)
    wt = np.random.default_rng(2).standard_normal((3, 4, 3, 2)).astype(np.float32)
    b = np.arange(4, dtype=np.float32)
    go = np.random.default_rng(3).standard_normal((2, 4, 4, 4)).astype(np.float32)
    pg = np.random.default_rng(4).standard_normal((2, 3, 3, 2)).astype(np.float32)
    idx = np.random.default_rng(5).integers(0, 30, (2, 3, 3, 2))
    big = 2**31 - 1
    cases = []
    add = cases.append
    # wrong ndim / mismatched channels / shapes
    for bad in (x[0, 0], x[None], np.float32(1.0), np.zeros((0,))):
        add(call("conv2d", bad, w, names=("x",)))
        add(call("max_pool2d", bad, 2, names=("x",)))
        add(call("avg_pool2d", bad, 2, names=("x",)))
    add(call("conv2d", x, w[:, :2], names=("weight.shape[1]",)))
    add(call("conv2d", x, w, b[:3], names=("bias",)))
    add(call("conv2d_backward", go[:, :3], x, w, names=("grad_out",)))
    add(call("conv2d_backward", go[0], x, w, names=("grad_out",)))
    add(call("conv_transpose2d", x, w, names=("weight",)))
    add(call("full_conv2d", x, wt[:2], names=("weight",)))
    add(call("max_pool2d_backward", pg, idx[:1], x.shape, names=("indices",)))
    add(call("max_pool2d_backward", pg, idx, (2, 3, 6), names=("input_shape",)))
    add(call("max_pool2d_backward", pg, idx + 30, x.shape, names=("indices",)))
    add(call("max_pool2d_backward", pg, idx - 30, x.shape, names=("indices",)))
    add(call("max_pool2d_backward", pg, idx.astype(np.float64), x.shape, names=("indices",)))
    add(call("max_pool2d_backward", pg, idx.astype(bool), x.shape, names=("indices",)))
    add(call("max_pool2d_backward", pg, idx, (2, 3, 2**31, 2**31), names=("input_shape",)))
    add(call("max_pool2d_backward", pg, idx, (2, 3, 2**62, 2), names=("input_shape",)))
    add(call("max_pool2d_backward", pg, idx, (2, 3, -6, 5), names=("input_shape",)))
    add(call("avg_pool2d_backward", pg, (2, 3, 6, 5), 2, names=()))
    add(call("avg_pool2d_backward", pg, (2, 3, 7, 5), 2, names=("grad_out",)))
    add(call("softmax_cross_entropy", np.zeros((2, 3)), [0, 3], names=("labels",)))
    add(call("softmax_cross_entropy", np.zeros((2, 3)), [0.0, 1.0], names=("labels",)))
    add(call("softmax_cross_entropy", np.zeros((2, 3)), [0], names=("labels",)))
    add(call("softmax_cross_entropy", np.full((2, 3), 1e4), [0, 2]))
    # zero and negative sizes, zero-size axes
    for name in ("stride", "dilation"):
        for v in (0, -1, (1, 0), -(2**63)):
            add(call("conv2d", x, w, **{name: v}, names=(name,)))
    for v in (-1, (0, -1), -(2**63)):
        add(call("conv2d", x, w, padding=v, names=("padding",)))
        add(call("max_pool2d", x, 2, padding=v, names=("padding",)))
    for v in (0, -2, (2, 0)):
        add(call("max_pool2d", x, v, names=("kernel_size",)))
        add(call("avg_pool2d", x, 2, stride=v, names=("stride",)))
    add(call("conv2d", np.zeros((0, 3, 6, 5), np.float32), w))
    add(call("conv2d", x, np.zeros((0, 3, 3, 2), np.float32)))
    add(call("conv2d", x[:, :0], np.zeros((4, 0, 3, 2), np.float32)))
    add(call("conv2d", x, np.zeros((4, 3, 0, 2), np.float32), names=("kernel",)))
    add(call("conv2d", x[:, :, :0], w, names=("kernel",)))
    add(call("conv2d_backward", go[:0], x[:0], w))
    add(call("max_pool2d", x[:0], 2, return_indices=True))
    add(call("max_pool2d", x[:, :0], 2))
    add(call("avg_pool2d", x[:, :, :0], 1, names=("kernel",)))
    add(call("max_pool2d_backward", pg[:0], idx[:0], (0, 3, 6, 5)))
    add(call("linear", np.zeros((3, 0)), np.zeros((2, 0))))
    add(call("relu", np.zeros((0, 3))))
    # kernels larger than the padded input
    add(call("conv2d", x, np.ones((4, 3, 7, 1), np.float32), names=("kernel",)))
    add(call("conv2d", x, np.ones((4, 3, 7, 1), np.float32), padding=1))
    add(call("conv2d", x, w, dilation=4, names=("kernel",)))
    add(call("max_pool2d", x, 7, names=("kernel",)))
    add(call("max_pool2d", x, 8, padding=1, names=("kernel",)))
    add(call("avg_pool2d", x, (2, 6), padding=(0, 1)))
    add(call("conv_transpose2d", x, wt, padding=5, names=("output size",)))
    # huge values: sizes near 2**31 and 2**63, padding 10**12
    for name in ("stride", "padding", "dilation"):
        for v in (big, 2**31, 2**63 - 1, 2**63, 10**12, (1, 2**63)):
            add(call("conv2d", x, w, **{name: v}, names=(name, "kernel", "GiB")))
            add(call("conv2d_backward", go, x, w, **{name: v}, names=(name, "grad_out", "GiB")))
    for v in (big, 2**31, 2**63, 10**12):
        add(call("max_pool2d", x, v, names=("kernel_size",)))
        add(call("max_pool2d", x, 2, stride=v, names=("stride",)))
        add(call("avg_pool2d", x, (v, 1), padding=(v // 2, 0), names=("kernel_size", "padding")))
        add(call("conv_transpose2d", x, wt, stride=v, names=("stride", "GiB")))
        add(call("conv_transpose2d", x, wt, output_padding=v, names=("output_padding",)))
    add(call("max_pool2d", x, (big, 1), padding=(big // 2, 0)))
    add(call("conv2d", x, w, padding=2**20, names=("GiB",)))
    add(call("conv2d", x, w, padding=1000, stride=1000))
    add(call("conv2d", np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), stride=big, padding=big))
    add(call("conv_transpose2d", np.ones((1, 1, 1, 1)), np.ones((1, 1, 2, 2)), dilation=2**30,
             names=("GiB",)))
    add(call("full_conv2d", np.ones((1, 1, 2**10, 2**10), np.uint8), np.ones((1, 2**12, 1, 1)),
             names=("GiB",)))
    # non-integer, bool, NaN/inf hyper-parameters
    for v in (2.0, 2.5, True, False, NAN, INF, -INF, "2", None, 1j, (2, 2.0), (True, 1),
              (2, 2, 2), (), np.array([[2, 2]]), np.float64(2)):
        add(call("conv2d", x, w, stride=v, names=("stride",)))
        add(call("max_pool2d", x, v, names=("kernel_size",)))
        add(call("avg_pool2d_backward", pg, x.shape, v, names=("kernel_size",)))
    for v in (NAN, INF, -INF, True, None, "0.1"):
        add(call("leaky_relu", x, v, names=("negative_slope",)))
    for v in (1, 0, None, "yes", np.array([True])):
        add(call("max_pool2d", x, 2, return_indices=v, names=("return_indices",)))
        add(call("conv2d_backward", go, x, w, bias=v, names=("bias",)))
    for v in (2, -3, 1.0, True, None, 2**63):
        add(call("softmax", x[0, 0], v, names=("axis",)))
    # wrong dtypes (complex, object, str, bool, datetime)
    for dt in (np.complex64, object, "U3", "S3", np.bool_, "datetime64[s]"):
        bad = x.astype(dt) if dt is not object else x.astype(object)
        add(call("conv2d", bad, w, names=("x",)))
        add(call("conv2d", x, w.astype(dt), names=("weight",)))
        add(call("max_pool2d", bad, 2, names=("x",)))
        add(call("conv2d_backward", go.astype(dt), x, w, names=("grad_out",)))
        add(call("relu", bad, names=("x",)))
        add(call("softmax_cross_entropy", bad[0, 0], [0] * 6, names=("logits",)))
    add(call("conv2d", [[[[1, 2], [3, 4]]]], [[[[1]]]]))
    add(call("conv2d", [[[[1, 2], [3]]]], [[[[1]]]], names=("x",)))
    add(call("conv2d", None, w, names=("x",)))
    add(call("max_pool2d", x.astype(np.uint8), 2))
    add(call("avg_pool2d", x.astype(np.int16), 2))
    # layers
    for v in (0, -1, 2.0, True, None, big + 1, 2**63):
        add(layer("Conv2D", [v, 2, 3], {"seed": 0}, names=("in_channels",)))
        add(layer("Dense", [3, v], {"seed": 0}, names=("out_features",)))
        add(layer("MaxPool2D", [v], names=("kernel_size",)))
    for v in (-0.1, 1.5, NAN, INF, True, "0.5"):
        add(layer("Dropout", [v], names=("p",)))
    for v in (NAN, INF, True, None):
        add(layer("LeakyReLU", [v], names=("alpha",)))
    add(layer("Conv2D", [3, 4, (3, 2)], {"seed": 0}, calls=[("backward", [go])],
              names=("forward",), allow_runtime=True))
    add(layer("Conv2D", [3, 4, (3, 2)], {"seed": 0},
              calls=[("forward", [x]), ("backward", [go[:, :, :3]])], names=("grad",)))
    add(layer("Conv2D", [3, 4, (3, 2)], {"seed": 0, "dtype": np.float64},
              calls=[("forward", [x]), ("backward", [LIKE]), ("backward", [LIKE])]))
    add(layer("MaxPool2D", [2], calls=[("forward", [x]), ("backward", [pg[:, :, :2]])],
              names=("grad", "indices")))
    add(layer("Dense", [30, 2], {"seed": 0}, calls=[("forward", [x]), ("backward", [LIKE])],
              names=("x",)))
    return cases


CORPUS = _corpus()


def test_corpus(worker):
    """Every corpus case gives a correct answer or a clean, named error."""
    failures = []
    for case in CORPUS:
        verdict = worker.run(case)
        STATS[verdict["status"]] += 1
        if verdict["status"] in GOOD:
            continue
        reason = known_bug(case, verdict)
        if reason is not None:
            KNOWN[reason] += 1
            continue
        failures.append(f"{verdict['status']}: {describe_case(case)}\n    {verdict['detail']}")
    assert len(CORPUS) > 200
    assert not failures, f"{len(failures)} of {len(CORPUS)} corpus cases failed:\n" + "\n".join(
        failures
    )
