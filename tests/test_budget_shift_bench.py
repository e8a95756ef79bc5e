"""bench/budget_shift.py's store surgery: the extra rows moved into the cut, the other families' last rows dropped."""

from __future__ import annotations

import json
import sqlite3

import pytest

from _bench import bench_module, fake_profile


@pytest.fixture(scope="module")
def bs():
    with bench_module("budget_shift") as module:
        yield module


def _rows(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT id, family, measured_at FROM measurements ORDER BY id").fetchall()
    finally:
        con.close()


def _extra(db, n):
    """n more conv2d rows, measured after the store's own (another plan seed)."""
    from fastdeepiot.devices.fake import FakeBackend
    from fastdeepiot.profiling.runner import plan, profile
    from fastdeepiot.profiling.store import Store

    backend = FakeBackend()
    with Store.open(db, backend.fingerprint()) as store:
        profile(backend, store, plan(["conv2d"], seed=5, network_every=0), max_new=n)


@pytest.mark.parametrize("keep_all", [True, False])
def test_shift_rows(bs, tmp_path, keep_all):
    db = fake_profile(tmp_path / "s.db", ["conv2d", "linear"], 24)
    before = _rows(db)
    before_id = before[-1][0]
    _extra(db, 10)
    # the cut: after every own row (nothing dropped), or before all of them (every other family's row dropped)
    minutes, seconds = (1e6, 0.0) if keep_all else (0.0, 1.0)
    got = bs.shift_rows(db, ["conv2d"], before_id, minutes, seconds)
    after = _rows(db)
    first = min(t for _, _, t in before)
    assert got["extra_rows"] == 10
    assert all(t == first for i, _, t in after if i > before_id)  # the extra rows sit inside the cut
    own_other = [r for r in before if r[1] != "conv2d"]
    assert own_other  # (linear rows and networks)
    if keep_all:
        assert got["dropped_rows"] == 0 and len(after) == len(before) + 10
    else:
        assert got["dropped_rows"] == len(own_other)
        assert {f for _, f, _ in after} == {"conv2d"}
        assert [r for r in after if r[0] <= before_id] == [r for r in before if r[1] == "conv2d"]


def test_shift_rows_keeps_every_family_given(bs, tmp_path):
    db = fake_profile(tmp_path / "s.db", ["conv2d", "linear", "gru"], 48)
    before = _rows(db)
    assert {"gru", "linear"} <= {r[1] for r in before}
    _extra(db, 5)
    got = bs.shift_rows(db, ["conv2d", "gru"], before[-1][0], 0.0, 1.0)  # the cut before every own row
    kept = {f for _, f, _ in _rows(db)}
    assert kept == {"conv2d", "gru"}
    assert got["dropped_rows"] == sum(1 for r in before if r[1] not in ("conv2d", "gru"))


def test_store_arm_read_from_a_score_made_already(bs, tmp_path):
    scored = tmp_path / "g.json"
    cut = {"layer_rows": 7, "random_networks": 2, "heldout_loso": {}, "heldout_all_styles": {}, "random_loso": {},
           "zoo": {}, "seeds": [], "other": 1}
    scored.write_text(json.dumps({"cuts": {"10": cut}}))
    got = bs._generalisation(bs.ROOT / "src", tmp_path / "none.db", "fake", 10.0, "0", tmp_path / "o", scored)
    assert got["layer_rows"] == 7 and "other" not in got and not (tmp_path / "o").exists()


def test_refuses_a_store_without_its_ground_truth(bs, tmp_path, capsys):
    db = fake_profile(tmp_path / "s.db", ["linear"], 3)
    assert bs.main(["--db", str(db), "--backend", "fake", "--out", str(tmp_path)]) == 2
    assert "ground truth" in capsys.readouterr().err


def test_refuses_an_unknown_family(bs, tmp_path, capsys):
    db = fake_profile(tmp_path / "s.db", ["linear"], 3)
    db.with_suffix(".truth.json").write_text("{}")
    assert bs.main(["--db", str(db), "--backend", "fake", "--family", "conv2d,nosuch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --family") and "nosuch" in err


def test_an_arm_at_a_commit_runs_that_commits_src(bs, tmp_path):
    src, code = bs._src("before", "HEAD", tmp_path)
    assert code == "HEAD" and src == tmp_path / "src-before" / "src"
    assert (src / "fastdeepiot" / "profiling" / "runner.py").is_file()
    here, label = bs._src("after", ".", tmp_path)
    assert here == bs.ROOT / "src" and label
