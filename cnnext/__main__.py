"""Command-line entry point: ``cnnext bench`` and ``cnnext train``.

Also runnable as ``python -m cnnext ...``.  Each sub-command lives in its own
module and is imported only when used.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import cast

_COMMANDS = {
    "bench": ("cnnext.bench", "Benchmark cnnext against the numpy reference and PyTorch."),
    "train": ("cnnext._train_cli", "Train a CNN on MNIST."),
}

_USAGE = (
    "usage: cnnext {bench,train} [options]   (cnnext COMMAND --help for options)\n\n"
) + "\n".join(
    f"  {name:<7}{help_}" for name, (_, help_) in _COMMANDS.items()
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        import cnnext

        print(f"cnnext {cnnext.__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in _COMMANDS:
        print(f"cnnext: unknown command {cmd!r}\n\n{_USAGE}", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(_COMMANDS[cmd][0])
    return cast(int, module.main(rest))  # the sub-command's exit status


if __name__ == "__main__":
    sys.exit(main())
