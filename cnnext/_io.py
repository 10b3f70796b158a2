"""Files: atomic writes, and model parameters in ``.npz`` archives (no pickle)."""
from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ._typing import Shape, StrPath


@contextlib.contextmanager
def atomic_write(path: StrPath, suffix: str = "") -> Iterator[BinaryIO]:
    """Write ``path`` all at once: yields a binary file object for a temporary
    file in the same directory, which is fsynced and renamed over ``path``
    (:func:`os.replace`) when the block ends normally, and deleted when it
    raises.  A crash never leaves a half-written file at ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_npz(path: StrPath, state: Mapping[str, npt.ArrayLike]) -> None:
    """Save ``state`` (name -> ndarray) as an uncompressed ``.npz`` at exactly ``path``."""
    path = os.fspath(path)
    # order="C", not ascontiguousarray (which turns a 0-d counter into 1-d).
    arrays = {name: np.asarray(a, order="C") for name, a in state.items()}
    with atomic_write(path, ".npz") as fh:
        # (mypy: a key could be savez's own allow_pickle; the keys are parameter names.)
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _bad(path: StrPath, why: str) -> ValueError:
    return ValueError(f"load: {os.fspath(path)!r} is not a valid cnnext model file: {why}")


def _reason(exc: BaseException) -> str:
    """Why numpy could not read an archive member, in cnnext's words."""
    text = str(exc)
    if "allow_pickle" in text or "pickle" in text.lower():
        return "it holds Python objects (pickled data), which cnnext never loads"
    return f"{type(exc).__name__}: {text}"


_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def load_npz(
    path: StrPath, expected: Mapping[str, tuple[Shape, np.dtype[Any]]]
) -> dict[str, npt.NDArray[Any]]:
    """Read the arrays of a ``.npz`` file made by :func:`save_npz`.

    ``expected`` maps name -> (shape, dtype).  Names, shapes and dtypes are
    checked from the ``.npy`` headers *before* any array is read, so a
    hostile header declaring a huge array is a clear error, never an attempt
    to allocate it.  Raises ValueError naming the first problem;
    FileNotFoundError etc. pass through.
    """
    path = os.fspath(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except _READ_ERRORS as exc:
        raise _bad(path, _reason(exc)) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _bad(path, "it holds a single array (.npy), not an .npz archive")
    with npz:
        names = sorted(npz.files)
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        if missing or extra:
            raise _bad(
                path,
                f"its parameter names do not match the model: missing {missing}, "
                f"unexpected {extra}",
            )
        try:
            headers = {name: _header(npz, name) for name in names}
        except _READ_ERRORS as exc:
            raise _bad(path, _reason(exc)) from None
        for name in names:
            shape, dtype = headers[name]
            want_shape, want_dtype = expected[name]
            if shape != tuple(want_shape) or dtype != want_dtype:
                raise _bad(
                    path,
                    f"{name!r} must have shape {tuple(want_shape)} and dtype {want_dtype}, "
                    f"the file declares shape {shape} and dtype {dtype}",
                )
        try:
            return {name: npz[name] for name in names}
        except _READ_ERRORS as exc:
            raise _bad(path, _reason(exc)) from None


def _header(npz: np.lib.npyio.NpzFile, name: str) -> tuple[Shape, np.dtype[Any]]:
    fmt = np.lib.format
    # npz.zip is None only once the archive is closed (the caller holds it open).
    with cast("zipfile.ZipFile", npz.zip).open(name + ".npy") as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        else:
            shape, _, dtype = fmt.read_array_header_2_0(fh)
    return shape, dtype
