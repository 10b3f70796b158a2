"""Hostile files: model .npz archives and MNIST IDX files.

* ``Module.save``/``load`` never use pickle; a truncated, corrupted or
  hostile ``.npz`` raises a clear error (ValueError naming the file) and
  leaves the model unchanged; an interrupted save never destroys the
  previous file and leaves no temporary file behind.
* ``load_mnist`` rejects bad magic numbers, truncated files and absurd
  declared sizes quickly, without reading (or allocating) gigabytes.
"""
import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from cnnext import datasets, nn

#: Under AddressSanitizer (tools/run_asan.sh preloads libasan) an address-
#: space cap is impossible (ASan reserves terabytes of shadow memory); the
#: subprocesses then rely on ASAN_OPTIONS=max_allocation_size_mb instead.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")
CAP = "" if UNDER_ASAN else (
    "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, resource.RLIM_INFINITY))"
)


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2D(1, 2, 3, seed=rng), nn.ReLU(), nn.MaxPool2D(2), nn.Flatten(),
        nn.Dense(2 * 3 * 3, 3, seed=rng),
    )


def _params(model):
    return {k: v.copy() for k, v in model.params.items()}


def _assert_unchanged(model, before):
    after = model.params
    assert after.keys() == before.keys()
    for k in before:
        assert after[k].tobytes() == before[k].tobytes(), k


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.npz"
    _model(1).save(path)
    return path


def test_saved_file_is_plain_npz_without_pickle(saved, monkeypatch):
    def no_pickle(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "dumps", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "dump", no_pickle)
    m = _model(0)
    m.save(saved)
    m2 = _model(5)
    m2.load(saved)
    _assert_unchanged(m2, _params(m))
    with np.load(saved, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(m.params)
        assert all(z[k].dtype.kind == "f" for k in z.files)


def _good_state():
    return {k: v.copy() for k, v in _model(2).params.items()}


def _hostile_files(tmp_path, saved):
    raw = saved.read_bytes()
    good = _good_state()
    files = {}

    def npz(name, arrays):
        p = tmp_path / f"{name}.npz"
        np.savez(p, **arrays)
        files[name] = p

    def raw_file(name, data):
        p = tmp_path / f"{name}.npz"
        p.write_bytes(data)
        files[name] = p

    for cut in (0, 10, 30, len(raw) // 2, len(raw) - 30, len(raw) - 1):
        raw_file(f"truncated-{cut}", raw[:cut])
    flipped = bytearray(raw)
    for i in range(len(raw) // 3, len(raw) // 3 + 64):
        flipped[i] ^= 0xFF
    raw_file("corrupted-bytes", bytes(flipped))
    raw_file("not-a-zip", b"this is not a zip archive at all" * 10)
    raw_file("gzip", gzip.compress(raw))
    bad = dict(good)
    bad["0.weight"] = good["0.weight"][:, :, :2]
    npz("wrong-shape", bad)
    bad = dict(good)
    bad["4.bias"] = good["4.bias"].astype(np.float64)
    npz("wrong-dtype", bad)
    bad = dict(good)
    bad["4.bias"] = good["4.bias"].astype(np.int32)
    npz("int-dtype", bad)
    bad = dict(good)
    bad["4.bias"] = np.array(["a", "b", "c"])
    npz("str-array", bad)
    bad = dict(good)
    bad["4.bias"] = good["4.bias"].astype(np.complex64)
    npz("complex-array", bad)
    npz("extra-array", dict(good, extra=np.zeros(3, np.float32)))
    npz("missing-array", {k: v for k, v in good.items() if k != "4.weight"})
    npz("renamed-array", {("x" + k if k == "0.weight" else k): v for k, v in good.items()})
    npz("empty", {})
    # object array: needs pickle to read
    p = tmp_path / "object-array.npz"
    bad = dict(good)
    bad["4.bias"] = np.array([object(), 1, "x"], dtype=object)
    np.savez(p, **bad)
    files["object-array"] = p
    # pickle payload disguised as an array member
    p = tmp_path / "pickle-member.npz"
    with zipfile.ZipFile(p, "w") as z:
        for k, v in good.items():
            buf = io.BytesIO()
            np.save(buf, v)
            z.writestr(k + ".npy", buf.getvalue())
        z.writestr("evil.npy", pickle.dumps({"boom": 1}))
    files["pickle-member"] = p
    # a .npy instead of an .npz
    p = tmp_path / "single.npz"
    with open(p, "wb") as f:
        np.save(f, good["0.weight"])
    files["single-npy"] = p
    # header that declares a gigantic array (64 GiB) with 4 bytes of data
    p = tmp_path / "huge-declared.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**34,)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(p, "w") as z:
        for k, v in good.items():
            if k != "0.weight":
                b = io.BytesIO()
                np.save(b, v)
                z.writestr(k + ".npy", b.getvalue())
        z.writestr("0.weight.npy", buf.getvalue() + b"\0\0\0\0")
    files["huge-declared"] = p
    return files


HOSTILE = [
    "truncated-0", "truncated-10", "truncated-30", "corrupted-bytes", "not-a-zip", "gzip",
    "wrong-shape", "wrong-dtype", "int-dtype", "str-array", "complex-array", "extra-array",
    "missing-array", "renamed-array", "empty", "object-array", "pickle-member", "single-npy",
]


@pytest.mark.parametrize("kind", HOSTILE + ["truncated-half", "truncated-end"])
def test_hostile_npz_raises_and_leaves_model_unchanged(tmp_path, saved, kind):
    files = _hostile_files(tmp_path, saved)
    raw_len = len(saved.read_bytes())
    aliases = {"truncated-half": f"truncated-{raw_len // 2}",
               "truncated-end": f"truncated-{raw_len - 30}"}
    path = files[aliases.get(kind, kind)]
    model = _model(0)
    before = _params(model)
    with pytest.raises(ValueError, match="load: .* is not a valid cnnext model file|load: "):
        model.load(path)
    _assert_unchanged(model, before)


def test_npz_with_huge_declared_array_fails_fast(tmp_path, saved):
    _huge_declared(tmp_path, saved, ("ValueError", "MemoryError"))


def test_npz_with_huge_declared_array_gives_clear_valueerror(tmp_path, saved):
    # Regression: load used to read every member before checking shapes, so
    # a hostile header gave numpy's bare MemoryError; headers are now checked
    # first.
    _huge_declared(tmp_path, saved, ("ValueError",))


def _huge_declared(tmp_path, saved, kinds):
    """A member whose header declares 2**34 float32 (64 GiB) but holds 4
    bytes: load fails quickly in a process capped at 1 GiB of address space,
    and the model is unchanged."""
    path = _hostile_files(tmp_path, saved)["huge-declared"]
    code = textwrap.dedent(f"""
        import resource, time
        {CAP}
        import numpy as np
        from cnnext import nn
        m = nn.Sequential(nn.Conv2D(1, 2, 3, seed=0), nn.ReLU(), nn.MaxPool2D(2),
                          nn.Flatten(), nn.Dense(18, 3, seed=1))
        before = {{k: v.copy() for k, v in m.params.items()}}
        t = time.perf_counter()
        try:
            m.load({str(path)!r})
            print("LOADED")
        except Exception as e:
            print(type(e).__name__, round(time.perf_counter() - t, 3), str(e)[:300])
        same = all((m.params[k] == before[k]).all() for k in before)
        print("UNCHANGED" if same else "CHANGED")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd="/")
    out = res.stdout.split("\n")
    assert res.returncode == 0, res.stderr[-2000:]
    kind, seconds = out[0].split()[:2]
    assert kind in kinds, out
    assert float(seconds) < 5, out
    assert out[1] == "UNCHANGED", out


def test_load_of_missing_file_and_directory(tmp_path):
    model = _model(0)
    before = _params(model)
    with pytest.raises(FileNotFoundError):
        model.load(tmp_path / "nope.npz")
    with pytest.raises((IsADirectoryError, PermissionError, ValueError)):
        model.load(tmp_path)
    _assert_unchanged(model, before)


class _Boom(RuntimeError):
    pass


def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch):
    """np.savez writes part of the archive, then fails: the old file is
    intact, loadable, and no temporary file is left in the directory."""
    path = tmp_path / "model.npz"
    old = _model(1)
    old.save(path)
    before = path.read_bytes()
    real_savez = np.savez

    def failing_savez(file, *args, **kwds):
        buf = io.BytesIO()
        real_savez(buf, *args, **kwds)
        data = buf.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        raise _Boom("disk full (simulated)")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(_Boom):
        _model(7).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    fresh = _model(3)
    fresh.load(path)
    _assert_unchanged(fresh, _params(old))


def test_interrupted_save_by_keyboard_interrupt(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    _model(1).save(path)
    before = path.read_bytes()

    def interrupted(file, *a, **k):
        file.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _model(7).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------


def _idx_images(n_declared, n_real, magic=2051, rows=28, cols=28):
    header = struct.pack(">IIII", magic, n_declared, rows, cols)
    return header + bytes(range(256)) * (n_real * rows * cols // 256) + bytes(
        n_real * rows * cols % 256
    )


def _idx_labels(n_declared, n_real, magic=2049):
    return struct.pack(">II", magic, n_declared) + bytes(i % 10 for i in range(n_real))


def _write_split(root, images, labels, gz):
    root.mkdir(parents=True, exist_ok=True)
    for name, data in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
        if gz:
            (root / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "images,labels,fragment",
    [
        (_idx_images(3, 3, magic=2049), _idx_labels(3, 3), "magic number"),
        (_idx_images(3, 3), _idx_labels(3, 3, magic=2051), "magic number"),
        (_idx_images(3, 3, magic=0x01020304), _idx_labels(3, 3), "magic number"),
        (_idx_images(3, 3)[:10], _idx_labels(3, 3), "truncated"),
        (_idx_images(3, 2), _idx_labels(3, 3), "truncated"),
        (_idx_images(3, 3), _idx_labels(3, 2), "truncated"),
        (struct.pack(">IIII", 2051, 3, 2**31, 28) + bytes(100), _idx_labels(3, 3), "28x28"),
        (_idx_images(3, 4), _idx_labels(3, 3), "trailing"),
        (_idx_images(2, 2), _idx_labels(3, 3), "must agree"),
        (b"", _idx_labels(3, 3), "truncated"),
    ],
)
def test_bad_idx_files_are_rejected(tmp_path, images, labels, fragment, gz):
    _write_split(tmp_path, images, labels, gz)
    with pytest.raises(ValueError, match=fragment):
        datasets.load_mnist(tmp_path, split="test")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("declared", [2**31, 2**32 - 1])
def test_absurd_declared_count_fails_fast_without_reading_gigabytes(tmp_path, declared, gz):
    """A header declaring 2**31 images (1.5 TiB) over 10 real ones fails in
    well under a second, in a process capped at 1 GiB of address space,
    having read no more than the file holds."""
    _write_split(tmp_path, _idx_images(declared, 10), _idx_labels(declared, 10), gz)
    code = textwrap.dedent(f"""
        import resource, time
        {CAP}
        from cnnext import datasets
        t = time.perf_counter()
        try:
            datasets.load_mnist({str(tmp_path)!r}, split="test")
            print("LOADED")
        except Exception as e:
            # Peak RSS of this process image (ru_maxrss would include the
            # forked pytest parent's pages from before exec).
            with open("/proc/self/status") as f:
                hwm = [l.split()[1] for l in f if l.startswith("VmHWM")][0]
            print(type(e).__name__, round(time.perf_counter() - t, 3), hwm, str(e)[:400])
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd="/")
    assert res.returncode == 0, res.stderr[-2000:]
    kind, seconds, hwm_kb = res.stdout.split()[:3]
    assert kind == "ValueError", res.stdout
    assert "holds only" in res.stdout
    assert float(seconds) < 2.0, res.stdout
    assert int(hwm_kb) < 300 * 1024, res.stdout  # the whole process, in KiB
