"""``cnnext bench``: time cnnext against the numpy reference, PyTorch CPU and numpy.

Two groups of rows, each timed with its peers interleaved in one process:

* the **layer suite** (:data:`SUITE`): seven convolution geometries, forward
  (``fwd``) and forward+backward (``fwd+bwd``: ``grad_x``, ``grad_weight``
  and ``grad_bias``), three pooling layers and one LeNet-5 training step,
  against :mod:`cnnext.reference` (the slow numpy oracle) and PyTorch;
* the **small calls** (:data:`SMALL_CALLS`, group ``small-calls``): the
  one-image-at-a-time regime of tutorial code -- a batch-1 training step of
  the tutorial network, the small MNIST network of Victor Zhou's "CNNs,
  Part 2: Training a Convolutional Neural Network"
  (https://victorzhou.com/blog/intro-to-cnns-part-2/), also through the
  tutorial adapter :mod:`cnnext.compat.victorzhou` against the tutorial's
  own numpy code; its forward pass; and single ``linear`` / ``conv2d`` /
  ``max_pool2d`` calls -- against PyTorch or numpy.

Ratios are ``cnnext time / peer time`` (below 1: cnnext is faster).  On a
shared machine absolute times are noise -- the ratios are the signal.

Modules: :mod:`~cnnext.bench.cases` (what is timed),
:mod:`~cnnext.bench.peers` and :mod:`~cnnext.bench.small_calls` (the
callables), :mod:`~cnnext.bench.harness` (the interleaved timer),
:mod:`~cnnext.bench.runner` (running rows), :mod:`~cnnext.bench.machine`
(CPU, load, threads), :mod:`~cnnext.bench.report` (tables, JSON, plot) and
:mod:`~cnnext.bench.cli` (the command line).  PyTorch is imported only when
a run asks for it (``torch="auto"``), never by ``import cnnext.bench``.
"""
from .cases import ALL_CASES, SCALING_CASES, SMALL_CALLS, SUITE, Case, SmallCall, select_cases
from .cli import main
from .harness import BenchConfig
from .machine import machine_info
from .peers import make_peers
from .report import format_scaling, format_small_calls, format_summary, format_table, summarize
from .runner import run_scaling, run_small_calls, run_suite

__all__ = [
    "Case",
    "SmallCall",
    "SUITE",
    "SMALL_CALLS",
    "ALL_CASES",
    "SCALING_CASES",
    "BenchConfig",
    "select_cases",
    "make_peers",
    "run_suite",
    "run_small_calls",
    "run_scaling",
    "machine_info",
    "summarize",
    "format_table",
    "format_summary",
    "format_small_calls",
    "format_scaling",
    "main",
]
