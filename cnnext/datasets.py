"""Real data: MNIST from its original IDX files.

:func:`load_mnist` reads the four files of the MNIST distribution
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each either raw or
gzip-compressed (``.gz``), and validates them before trusting them: magic
numbers, dimensions, the declared item count against the actual (decompressed)
length, label range, and that images and labels agree in number.
:func:`download_mnist` fetches the official ``.gz`` files from a mirror and
verifies their MD5 checksums.

The default directory is ``$CNNEXT_DATA/mnist`` when the environment variable
``CNNEXT_DATA`` is set, else ``~/.cache/cnnext/mnist``.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, BinaryIO, Literal, cast

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ._typing import StrPath

__all__ = ["load_mnist", "download_mnist", "default_root", "DownloadError", "MIRRORS", "MD5"]

#: Mirrors of the official MNIST files, tried in order (the first is the one
#: torchvision uses).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Official MD5 checksums of the gzip-compressed files.
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_SIDE = 28
_N_CLASSES = 10
_CHUNK = 1 << 20
# No official file is larger than 10 MB; a download that exceeds this is not MNIST.
_MAX_DOWNLOAD = 64 << 20


class DownloadError(OSError):
    """Every mirror failed (offline, HTTP error, or checksum mismatch)."""


def default_root() -> str:
    """The default MNIST directory: ``$CNNEXT_DATA/mnist`` or ``~/.cache/cnnext/mnist``.

    Examples
    --------
    >>> from cnnext.datasets import default_root
    >>> default_root().endswith("mnist")
    True
    """
    base = os.environ.get("CNNEXT_DATA")
    if base:
        return os.path.join(os.path.expanduser(base), "mnist")
    return os.path.join(os.path.expanduser("~"), ".cache", "cnnext", "mnist")


def _root(fname: str, root: StrPath | None) -> str:
    if root is None:
        return default_root()
    try:
        return os.path.expanduser(os.fspath(root))
    except TypeError:
        raise TypeError(
            f"{fname}: root must be a path or None, got {type(root).__name__}"
        ) from None


def _find(root: str, base: str) -> str | None:
    """Path of ``base`` or ``base.gz`` in ``root`` (raw preferred), or None."""
    for name in (base, base + ".gz"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


class _Gunzip:
    """A gzip file's decompressed bytes, read as ``read(n)``: the compressed
    file read at once and each read one decompression call whose output is
    bounded by ``n`` (members after the first read on, as ``gzip`` reads
    them; a stream cut short raises EOFError, a damaged one zlib.error)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self.rest = f.read()
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def __enter__(self) -> _Gunzip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rest = b""

    def read(self, n: int) -> bytes:
        parts = []
        while n > 0:
            if self.d.eof:  # the next member, if any (zero padding skipped, as gzip does)
                self.rest = self.d.unused_data.lstrip(b"\0")
                if not self.rest:
                    break
                self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = self.d.decompress(self.rest, n)
            self.rest = self.d.unconsumed_tail
            if not chunk and not self.rest and not self.d.eof:
                raise EOFError("Compressed file ended before the end-of-stream marker was "
                               "reached")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)


def _read_idx(path: str, magic: int, kind: str) -> tuple[npt.NDArray[np.uint8], tuple[int, ...]]:
    """uint8 payload of an IDX file and its dimensions, fully validated."""
    ndim = 3 if magic == _IMAGE_MAGIC else 1
    header_len = 4 * (1 + ndim)
    where = f"load_mnist: {path}"
    compressed = _is_gzip(path)
    try:
        with _Gunzip(path) if compressed else open(path, "rb") as f:
            header = f.read(header_len)
            if len(header) < header_len:
                raise ValueError(
                    f"{where}: truncated IDX header ({len(header)} bytes, an IDX {kind} "
                    f"file starts with {header_len})"
                )
            got = struct.unpack(">I", header[:4])[0]
            if got != magic:
                raise ValueError(
                    f"{where}: magic number {got} (0x{got:08x}) is not {magic} "
                    f"(0x{magic:08x}), the magic number of an IDX {kind} file"
                )
            dims = struct.unpack(">" + "I" * ndim, header[4:])
            if ndim == 3 and dims[1:] != (_SIDE, _SIDE):
                raise ValueError(
                    f"{where}: images must be {_SIDE}x{_SIDE}, the header declares "
                    f"{dims[1]}x{dims[2]}"
                )
            expected = int(np.prod(dims, dtype=np.int64))
            buf: bytes | None
            if compressed:
                # One byte past the declared size, the output growing with
                # what the stream holds: an absurd declared count costs only
                # the file's real length, never an allocation of that size.
                buf = f.read(expected + 1)
                actual = len(buf)
            else:
                actual = os.path.getsize(path) - header_len
                buf = None
            if actual != expected:
                if actual < expected:
                    holds = f"only {actual} bytes (truncated?)"
                elif compressed:
                    holds = f"more than {expected} bytes (trailing data)"
                else:
                    holds = f"{actual} bytes (trailing data)"
                raise ValueError(
                    f"{where}: header declares {dims[0]} {kind} ({expected} bytes of data) "
                    f"but the file holds {holds}"
                )
            if buf is None:
                data = np.fromfile(cast("BinaryIO", f), dtype=np.uint8, count=expected)
            else:
                data = np.frombuffer(buf, dtype=np.uint8)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"{where}: not a readable IDX {kind} file: {exc}") from None
    return data, dims


def _load_split(root: str, split: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    img_base, lbl_base = _FILES[split]
    img_path, lbl_path = _find(root, img_base), _find(root, lbl_base)
    if img_path is None or lbl_path is None:
        missing = [b for b, p in ((img_base, img_path), (lbl_base, lbl_path)) if p is None]
        raise FileNotFoundError(
            f"load_mnist: MNIST {split} split not found in {root!r}: missing "
            f"{' and '.join(m + '[.gz]' for m in missing)}. Pass download=True (or "
            f"`cnnext train --download`), or put the files from {MIRRORS[0]} there."
        )
    pixels, (n, h, w) = _read_idx(img_path, _IMAGE_MAGIC, "images")
    labels, (n_labels,) = _read_idx(lbl_path, _LABEL_MAGIC, "labels")
    if n != n_labels:
        raise ValueError(
            f"load_mnist: {img_path} holds {n} images but {lbl_path} holds {n_labels} "
            f"labels; they must agree"
        )
    if labels.size and labels.max() >= _N_CLASSES:
        raise ValueError(
            f"load_mnist: {lbl_path}: labels must be digits 0-9, got a label {labels.max()}"
        )
    images = pixels.reshape(n, 1, h, w).astype(np.float32)
    images /= np.float32(255)
    return images, labels.astype(np.int64)


def load_mnist(
    root: StrPath | None = None, split: Literal["train", "test"] = "train", download: bool = False
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Load an MNIST split from its IDX files (raw or ``.gz``).

    Parameters
    ----------
    root : path, optional
        Directory holding the files (default :func:`default_root`).
    split : {"train", "test"}
        ``"train"``: the 60,000 ``train-*`` images; ``"test"``: the 10,000
        ``t10k-*`` images.
    download : bool
        Fetch the split's missing files with :func:`download_mnist` first.

    Returns
    -------
    images : ndarray of float32, shape (N, 1, 28, 28)
        Pixel values scaled to [0, 1] (``uint8 / 255``).
    labels : ndarray of int64, shape (N,)
        Digits 0-9.

    Raises
    ------
    FileNotFoundError
        The files are missing (and ``download`` is False).
    ValueError
        A file is not valid MNIST IDX data: wrong magic number, dimensions
        other than 28x28, a declared count that does not match the data
        (checked without reading more than the file holds), corrupt gzip,
        labels outside 0-9, or image and label counts that differ.
    DownloadError
        ``download=True`` and no mirror delivered a file with the right
        checksum (e.g. offline).

    Examples
    --------
    >>> from cnnext.datasets import load_mnist
    >>> x, y = load_mnist("~/data/mnist", split="test")  # doctest: +SKIP
    >>> x.shape, x.dtype, y[:5]  # doctest: +SKIP
    ((10000, 1, 28, 28), dtype('float32'), array([7, 2, 1, 0, 4]))
    """
    fname = "load_mnist"
    if split not in _FILES:
        raise ValueError(f"{fname}: split must be 'train' or 'test', got {split!r}")
    if not isinstance(download, bool):
        raise TypeError(f"{fname}: download must be a bool, got {download!r}")
    root = _root(fname, root)
    if download and any(_find(root, base) is None for base in _FILES[split]):
        download_mnist(root, splits=(split,))
    return _load_split(root, split)


def _fetch(url: str, dest: str, md5: str, timeout: float) -> None:
    """Download ``url`` to ``dest`` atomically if its MD5 is ``md5``; else raise."""
    import hashlib
    import urllib.request

    from . import _io

    request = urllib.request.Request(url, headers={"User-Agent": "cnnext"})
    with _io.atomic_write(dest, ".gz") as out, urllib.request.urlopen(
        request, timeout=timeout
    ) as resp:
        digest = hashlib.md5()
        size = 0
        while True:
            chunk = resp.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > _MAX_DOWNLOAD:
                raise ValueError(f"response larger than {_MAX_DOWNLOAD >> 20} MiB")
            digest.update(chunk)
            out.write(chunk)
        got = digest.hexdigest()
        if got != md5:
            raise ValueError(f"checksum mismatch: md5 {got}, expected {md5}")


def _md5_of(path: str) -> str:
    import hashlib

    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_mnist(
    root: StrPath | None = None,
    splits: str | Iterable[str] = ("train", "test"),
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 30.0,
) -> list[str]:
    """Download the official MNIST ``.gz`` files into ``root``, verifying MD5s.

    Files already present (raw, or ``.gz`` with the right checksum) are not
    fetched again.  Each file goes to a temporary file in ``root`` and is
    renamed into place only after its checksum matched, so an interrupted or
    corrupted download never leaves a bad file behind.

    Parameters
    ----------
    root : path, optional
        Target directory (created if needed; default :func:`default_root`).
    splits : iterable of {"train", "test"}
    mirrors : sequence of str
        Base URLs tried in order for each file (default :data:`MIRRORS`).
    timeout : float
        Seconds per connection attempt.

    Returns
    -------
    list of str
        Paths of the split files in ``root``.

    Raises
    ------
    DownloadError
        Every mirror failed for some file; the message lists each URL and
        why (no network, HTTP error, checksum mismatch).

    Examples
    --------
    >>> from cnnext.datasets import download_mnist
    >>> paths = download_mnist("~/mnist", splits=("test",))  # doctest: +SKIP
    """
    import http.client
    import urllib.error

    fname = "download_mnist"
    root = _root(fname, root)
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    for s in splits:
        if s not in _FILES:
            raise ValueError(f"{fname}: splits must contain 'train' and/or 'test', got {s!r}")
    if isinstance(mirrors, str) or not mirrors:
        raise ValueError(
            f"{fname}: mirrors must be a non-empty sequence of base URLs, got {mirrors!r}"
        )
    os.makedirs(root, exist_ok=True)
    paths = []
    for split in splits:
        for base in _FILES[split]:
            name = base + ".gz"
            dest = os.path.join(root, name)
            if os.path.isfile(os.path.join(root, base)):
                paths.append(os.path.join(root, base))
                continue
            if os.path.isfile(dest) and _md5_of(dest) == MD5[name]:
                paths.append(dest)
                continue
            errors = []
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + name
                try:
                    _fetch(url, dest, MD5[name], timeout)
                    break
                except (
                    OSError,
                    ValueError,
                    http.client.HTTPException,
                    urllib.error.URLError,
                ) as exc:
                    errors.append(f"{url}: {type(exc).__name__}: {exc}")
            else:
                raise DownloadError(
                    f"{fname}: could not download {name} into {root!r}; tried:\n  "
                    + "\n  ".join(errors)
                    + f"\nAre you offline? Otherwise download {name} by hand into {root!r} "
                    f"(expected md5 {MD5[name]})."
                )
            paths.append(dest)
    return paths
