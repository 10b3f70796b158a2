"""cnnext.datasets: IDX parsing and validation on tiny hand-built files,
downloads through fake (server-free) openers, and the real test split."""

import gzip
import hashlib
import io
import os
import struct
import time
import tracemalloc
import urllib.error
import urllib.request

import numpy as np
import pytest

from cnnext import datasets as D
from cnnext.datasets import DownloadError, load_mnist

IMG, LBL = 2051, 2049


def _idx_bytes(magic, dims, payload):
    return struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims) + bytes(payload)


def _write(path, data, compress):
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def _make_split(root, rng, n=5, split="test", compress=True, images=None, labels=None):
    prefix = "t10k" if split == "test" else "train"
    pix = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
    lab = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else labels
    _write(
        root / f"{prefix}-images-idx3-ubyte",
        _idx_bytes(IMG, (len(pix), 28, 28), pix.tobytes()),
        compress,
    )
    _write(
        root / f"{prefix}-labels-idx1-ubyte", _idx_bytes(LBL, (len(lab),), lab.tobytes()), compress
    )
    return pix, lab


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_tiny_split(tmp_path, rng, compress, split):
    pix, lab = _make_split(tmp_path, rng, n=7, split=split, compress=compress)
    x, y = load_mnist(tmp_path, split=split)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (7,) and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], pix.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, lab)
    assert x.min() >= 0 and x.max() <= 1


def test_mixed_raw_and_gz(tmp_path, rng):
    pix = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    _write(tmp_path / "t10k-images-idx3-ubyte", _idx_bytes(IMG, (3, 28, 28), pix.tobytes()), False)
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(LBL, (3,), b"\x01\x02\x03"), True)
    x, y = load_mnist(str(tmp_path), "test")
    np.testing.assert_array_equal(y, [1, 2, 3])
    assert x.shape == (3, 1, 28, 28)


def _only(tmp_path, rng, images=None, labels=None, compress=True):
    """Write a test split where images/labels bytes may be replaced."""
    pix = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    img = _idx_bytes(IMG, (4, 28, 28), pix.tobytes()) if images is None else images
    lab = _idx_bytes(LBL, (4,), b"\x00\x01\x02\x03") if labels is None else labels
    _write(tmp_path / "t10k-images-idx3-ubyte", img, compress)
    _write(tmp_path / "t10k-labels-idx1-ubyte", lab, compress)


GOOD = np.zeros(4 * 784, np.uint8).tobytes()


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize(
    "images, labels, match",
    [
        (_idx_bytes(LBL, (4, 28, 28), GOOD), None, r"magic number 2049 \(0x00000801\) is not 2051"),
        (None, _idx_bytes(IMG, (4,), b"\x00" * 4), "magic number 2051.*is not 2049"),
        (_idx_bytes(IMG, (4, 27, 28), GOOD[: 4 * 27 * 28]), None, "must be 28x28.*27x28"),
        (
            _idx_bytes(IMG, (4, 28, 28), GOOD[:-1]),
            None,
            r"declares 4 images .* holds only 3135 bytes \(truncated\?\)",
        ),
        (_idx_bytes(IMG, (4, 28, 28), GOOD + b"\x00"), None, "trailing data"),
        (None, _idx_bytes(LBL, (4,), b"\x00\x01"), "truncated"),
        (b"\x00\x00\x08", None, "truncated IDX header"),
        (None, _idx_bytes(LBL, (3,), b"\x00\x01\x02"), "4 images but .* 3 labels"),
        (None, _idx_bytes(LBL, (4,), b"\x00\x01\x0a\x03"), "digits 0-9, got a label 10"),
    ],
    ids=[
        "swapped-magic",
        "label-magic",
        "dims",
        "truncated",
        "trailing",
        "labels-short",
        "header",
        "count-mismatch",
        "label-range",
    ],
)
def test_invalid_files_rejected(tmp_path, rng, images, labels, match, compress):
    _only(tmp_path, rng, images, labels, compress)
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path, "test")


def test_gzip_members_and_zero_padding(tmp_path, rng):
    """A .gz of several members, zero-padded after the last (as gzip writes
    and reads them), holds the bytes of the members one after the other."""
    pix, lab = _make_split(tmp_path, rng, n=3, compress=False)
    for base in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        data = (tmp_path / base).read_bytes()
        cut = len(data) // 3
        (tmp_path / base).unlink()
        blob = gzip.compress(data[:cut]) + gzip.compress(data[cut:]) + b"\0" * 7
        (tmp_path / (base + ".gz")).write_bytes(blob)
        assert gzip.decompress(blob) == data
    x, y = load_mnist(tmp_path, "test")
    np.testing.assert_array_equal(x[:, 0], pix / np.float32(255))
    np.testing.assert_array_equal(y, lab)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_absurd_declared_count_is_cheap(tmp_path, rng, compress):
    """A header claiming 4 billion images must fail fast, without allocating it."""
    _only(tmp_path, rng, images=_idx_bytes(IMG, (2**32 - 1, 28, 28), GOOD), compress=compress)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="declares 4294967295 images"):
            load_mnist(tmp_path, "test")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 16 * 2**20, f"peak allocation {peak} bytes"


def test_corrupt_gzip_rejected(tmp_path, rng):
    pix = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    blob = gzip.compress(_idx_bytes(IMG, (4, 28, 28), pix.tobytes()))
    _only(tmp_path, rng)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="not a readable IDX images file"):
        load_mnist(tmp_path, "test")
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    bad[len(bad) // 2 + 1] ^= 0xFF
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(bad))
    with pytest.raises(ValueError):
        load_mnist(tmp_path, "test")


def test_missing_files_and_bad_arguments(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"test split not found .*t10k-images-idx3-ubyte\[.gz\].*download=True",
    ):
        load_mnist(tmp_path, "test")
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load_mnist(tmp_path, "val")
    with pytest.raises(TypeError, match="download"):
        load_mnist(tmp_path, "test", download="yes")


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNEXT_DATA", str(tmp_path))
    assert D.default_root() == os.path.join(str(tmp_path), "mnist")
    monkeypatch.delenv("CNNEXT_DATA")
    assert D.default_root() == os.path.join(os.path.expanduser("~"), ".cache", "cnnext", "mnist")


# --------------------------------------------------------------------------
# downloads, without a network
# --------------------------------------------------------------------------


def _offline(monkeypatch):
    calls = []

    def urlopen(req, timeout=None):
        calls.append(req.full_url)
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_offline_download_gives_a_clear_error(tmp_path, monkeypatch):
    calls = _offline(monkeypatch)
    target = tmp_path / "cache"
    with pytest.raises(
        DownloadError,
        match="(?s)could not download t10k-images-idx3-ubyte.gz.*Network is unreachable.*offline",
    ) as info:
        load_mnist(target, "test", download=True)
    assert isinstance(info.value, OSError)
    assert calls == [m + "t10k-images-idx3-ubyte.gz" for m in D.MIRRORS]
    assert all(url in str(info.value) for url in calls)
    assert os.listdir(target) == []  # no temporary files left behind


class _Server:
    """A fake opener: maps URL -> bytes (or an exception to raise)."""

    def __init__(self, files):
        self.files, self.calls = files, []

    def __call__(self, req, timeout=None):
        url = req.full_url
        self.calls.append(url)
        body = self.files.get(url)
        if body is None:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        if isinstance(body, Exception):
            raise body
        return io.BytesIO(body)


def test_checksum_mismatch_rejected(tmp_path, monkeypatch):
    name = "t10k-images-idx3-ubyte.gz"
    server = _Server({m + name: b"definitely not mnist" for m in D.MIRRORS})
    monkeypatch.setattr(urllib.request, "urlopen", server)
    with pytest.raises(
        DownloadError, match=f"(?s)checksum mismatch: md5 [0-9a-f]{{32}}, expected {D.MD5[name]}"
    ):
        D.download_mnist(tmp_path, splits="test")
    assert server.calls == [m + "t10k-images-idx3-ubyte.gz" for m in D.MIRRORS]
    assert os.listdir(tmp_path) == []  # the bad bytes were never kept


def test_download_then_load_with_fallback_mirror(tmp_path, monkeypatch, rng):
    src = tmp_path / "src"
    src.mkdir()
    pix, lab = _make_split(src, rng, n=6, split="test", compress=True)
    blobs = {p.name: p.read_bytes() for p in src.iterdir()}
    for name, blob in blobs.items():
        monkeypatch.setitem(D.MD5, name, hashlib.md5(blob).hexdigest())
    files = {D.MIRRORS[0] + n: urllib.error.URLError("connection refused") for n in blobs}
    files.update({D.MIRRORS[1] + n: b for n, b in blobs.items()})
    server = _Server(files)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    cache = tmp_path / "cache"
    x, y = load_mnist(cache, "test", download=True)
    np.testing.assert_array_equal(y, lab)
    np.testing.assert_array_equal(x[:, 0], pix / np.float32(255))
    assert sorted(os.listdir(cache)) == sorted(blobs)
    assert len(server.calls) == 4  # both files: first mirror failed, second served
    load_mnist(cache, "test", download=True)  # present and verified: no new requests
    assert len(server.calls) == 4
    assert D.download_mnist(cache, splits=["test"]) == [
        str(cache / n) for n in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    ]
    assert len(server.calls) == 4


def test_download_argument_validation(tmp_path):
    with pytest.raises(ValueError, match="splits"):
        D.download_mnist(tmp_path, splits=["validation"])
    with pytest.raises(ValueError, match="mirrors"):
        D.download_mnist(tmp_path, mirrors="https://example.org/")


# --------------------------------------------------------------------------
# the real test split
# --------------------------------------------------------------------------


def test_real_test_split(mnist_dir):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert hashlib.md5((mnist_dir / name).read_bytes()).hexdigest() == D.MD5[name]
    x, y = load_mnist(mnist_dir, "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(
        np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.12 < x.mean() < 0.14  # MNIST's mean pixel is ~0.133
