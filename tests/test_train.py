"""cnnext.train: fit/evaluate semantics, shuffling, history, progress output."""

import io
import sys
import types

import numpy as np
import pytest

from cnnext import nn, optim
from cnnext import train as T
from cnnext.train import evaluate, fit


def _data(rng, n=96):
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


def _model(seed=0, dropout=0.0):
    rng = np.random.default_rng(seed)
    layers = [nn.Dense(4, 16, seed=rng), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout, seed=rng))
    layers.append(nn.Dense(16, 2, init="glorot", seed=rng))
    return nn.Sequential(*layers)


def _fit(model, x, y, **kw):
    kw.setdefault("progress", False)
    return fit(
        model,
        nn.SoftmaxCrossEntropy(),
        optim.SGD(model, lr=0.2),
        x,
        y,
        kw.pop("epochs", 3),
        kw.pop("batch_size", 8),
        **kw,
    )


def test_fit_learns_and_reports_history(rng):
    x, y = _data(rng)
    model = _model()
    before = evaluate(model, nn.SoftmaxCrossEntropy(), x, y)
    hist = _fit(model, x, y, epochs=15, seed=0, validation_data=(x[:40], y[:40]))
    assert set(hist) == {"epoch", "loss", "accuracy", "time", "val_loss", "val_accuracy"}
    assert hist["epoch"] == list(range(1, 16))
    assert all(len(v) == 15 for v in hist.values())
    assert all(t >= 0 for t in hist["time"])
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    assert hist["accuracy"][-1] >= 0.9
    after = evaluate(model, nn.SoftmaxCrossEntropy(), x, y)
    assert after["loss"] < before["loss"] and after["accuracy"] >= 0.9
    assert (
        hist["val_accuracy"][-1]
        == evaluate(model, nn.SoftmaxCrossEntropy(), x[:40], y[:40])["accuracy"]
    )


def test_fit_equals_hand_written_loop_without_shuffle(rng):
    x, y = _data(rng, n=30)
    a, b = _model(3), _model(3)
    _fit(a, x, y, epochs=2, batch_size=7, shuffle=False)
    loss, opt = nn.SoftmaxCrossEntropy(), optim.SGD(b, lr=0.2)
    for _ in range(2):
        for s in range(0, 30, 7):  # last batch has 2 samples
            opt.zero_grad()
            loss.forward(b.forward(x[s : s + 7]), y[s : s + 7])
            b.backward(loss.backward())
            opt.step()
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_shuffle_is_seeded(rng):
    x, y = _data(rng, n=40)
    runs = {}
    for key, seed in [("a", 5), ("b", 5), ("c", 6)]:
        m = _model(1)
        _fit(m, x, y, epochs=2, batch_size=4, seed=seed)
        runs[key] = m.params["0.weight"].copy()
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.array_equal(runs["a"], runs["c"])
    m = _model(1)
    _fit(m, x, y, epochs=2, batch_size=4, seed=np.random.default_rng(5))
    np.testing.assert_array_equal(m.params["0.weight"], runs["a"])


def test_fit_does_not_modify_data_and_restores_mode(rng):
    x, y = _data(rng, n=20)
    x.flags.writeable = False
    x0, y0 = x.copy(), y.copy()
    model = _model(dropout=0.3).eval()
    _fit(model, x, y, epochs=1)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    assert not model.training and not model[2].training
    model.train()
    evaluate(model, nn.SoftmaxCrossEntropy(), x, y)
    assert model.training and model[2].training


def test_evaluate_runs_in_eval_mode(rng):
    x, y = _data(rng, n=50)
    model = _model(dropout=0.5)
    r1 = evaluate(model, nn.SoftmaxCrossEntropy(), x, y, batch_size=7)
    r2 = evaluate(model, nn.SoftmaxCrossEntropy(), x, y, batch_size=50)
    assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-5)
    model.eval()
    out = model.forward(x)
    assert r1["accuracy"] == np.mean(out.argmax(1) == y)
    loss = nn.SoftmaxCrossEntropy().forward(out, y)
    assert r1["loss"] == pytest.approx(loss, rel=1e-5)


def test_evaluate_accuracy_rules():
    model = nn.Sequential(nn.Dense(2, 2, dtype=np.float64, seed=0))
    model.params["0.weight"][...] = np.eye(2)
    model.params["0.bias"][...] = 0
    x = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    r = evaluate(model, nn.SoftmaxCrossEntropy(), x, np.array([0, 0, 0]))
    assert r["accuracy"] == pytest.approx(2 / 3)
    onehot = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    r = evaluate(model, nn.MSELoss(), x, onehot, batch_size=2)
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["loss"] == pytest.approx(((x - onehot) ** 2).mean(), rel=1e-12)
    # regression targets: accuracy does not apply
    r = evaluate(nn.Sequential(nn.Dense(2, 1, seed=0)), nn.MSELoss(), x, np.zeros((3, 1)))
    assert np.isnan(r["accuracy"]) and r["loss"] > 0
    r = evaluate(model, nn.MSELoss(), x, x * 0.5)
    assert np.isnan(r["accuracy"])


def test_on_epoch_end_called_with_logs(rng):
    x, y = _data(rng, n=16)
    seen = []
    hist = _fit(_model(), x, y, epochs=3, on_epoch_end=lambda e, logs: seen.append((e, logs)))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert [logs["loss"] for _, logs in seen] == hist["loss"]


# --------------------------------------------------------------------------
# progress output
# --------------------------------------------------------------------------


def test_silent_when_not_a_terminal(rng, capsys):
    x, y = _data(rng, n=16)
    _fit(_model(), x, y, epochs=2, progress=None)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


class _TTY(io.StringIO):
    def isatty(self):
        return True


def _hide_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)


def test_text_bar_on_a_terminal_and_off_when_asked(rng, monkeypatch):
    _hide_tqdm(monkeypatch)
    x, y = _data(rng, n=16)
    tty = _TTY()
    monkeypatch.setattr(sys, "stderr", tty)
    _fit(_model(), x, y, epochs=2, batch_size=4, progress=None)
    text = tty.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "16/16" in text and "loss" in text
    tty.seek(0)
    tty.truncate()
    _fit(_model(), x, y, epochs=2, progress=False)
    assert tty.getvalue() == ""


def test_progress_true_forces_a_bar(rng, monkeypatch, capsys):
    _hide_tqdm(monkeypatch)
    x, y = _data(rng, n=8)
    _fit(_model(), x, y, epochs=1, batch_size=4, progress=True)
    out = capsys.readouterr()
    assert out.out == "" and "epoch 1/1" in out.err


def test_uses_tqdm_when_installed(rng, monkeypatch):
    made = []

    class FakeTqdm:
        def __init__(self, total, desc, **kw):
            self.total, self.desc, self.n = total, desc, 0
            made.append(self)

        def update(self, n):
            self.n += n

        def set_postfix_str(self, s, refresh=True):
            self.postfix = s

        def close(self):
            self.closed = True

    fake = types.ModuleType("tqdm.auto")
    fake.tqdm = FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake)
    monkeypatch.setattr(sys, "stderr", _TTY())
    x, y = _data(rng, n=12)
    _fit(_model(), x, y, epochs=2, batch_size=5, progress=None)
    assert [b.desc for b in made] == ["epoch 1/2", "epoch 2/2"]
    assert all(b.n == b.total == 12 and b.closed for b in made)
    assert sys.stderr.getvalue() == ""


def test_text_bar_draws():
    stream = io.StringIO()
    bar = T._TextBar(10, "epoch 1/1", stream)
    bar.update(10)
    bar.set_postfix_str("loss 0.5")
    bar.close()
    text = stream.getvalue()
    assert "[" + "#" * 24 + "]" in text and "10/10" in text and "loss 0.5" in text
    assert text.endswith("\n")


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(y=np.zeros(5, np.int64)), ValueError, "same number of samples"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(epochs=-1), ValueError, "epochs"),
        (dict(epochs=1.5), TypeError, "epochs"),
        (dict(progress="yes"), TypeError, "progress"),
        (dict(shuffle=1), TypeError, "shuffle"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(validation_data=np.zeros(3)), TypeError, "validation_data"),
        (dict(on_epoch_end=3), TypeError, "on_epoch_end"),
        (dict(optimizer=object()), TypeError, "optimizer"),
    ],
)
def test_fit_validation(kw, exc, match, rng):
    x, y = _data(rng, n=8)
    model = _model()
    args = dict(
        model=model,
        loss=nn.SoftmaxCrossEntropy(),
        optimizer=optim.SGD(model, lr=0.1),
        x=x,
        y=y,
        epochs=1,
        batch_size=2,
        progress=False,
    )
    args.update(kw)
    with pytest.raises(exc, match=match):
        fit(**args)


def test_zero_epochs_is_a_no_op(rng):
    x, y = _data(rng, n=8)
    model = _model()
    before = model.state_dict()
    hist = _fit(model, x, y, epochs=0)
    assert hist == {"epoch": [], "loss": [], "accuracy": [], "time": []}
    for k, v in before.items():
        np.testing.assert_array_equal(model.params[k], v)


def test_no_stderr_at_all(rng, monkeypatch):
    """pythonw-style processes have sys.stderr = None: no bar, no crash."""
    monkeypatch.setattr(sys, "stderr", None)
    x, y = _data(rng, n=8)
    hist = _fit(_model(), x, y, epochs=1, batch_size=4, progress=True)
    assert len(hist["loss"]) == 1
