"""The main job's profile top-up: on a slow host a short budget leaves families the main job needs without a model
(80 measurements in 4 minutes, `make run` then failed at predicting DeepSense); it profiles those families more."""

from __future__ import annotations

from fastdeepiot import mainjob
from fastdeepiot.profiling.store import Store


def _counts(db, families):
    with Store.open(db) as store:
        return {f: sum(1 for _ in store.measurements(kind="layer", family=f)) for f in families}


def test_top_up_profiles_the_short_families_the_main_job_needs(tmp_path, capsys):
    need = mainjob.needed_families()
    assert {"conv1d", "gru", "linear", "batchnorm", "conv2d"} <= set(need) and ("kind", "relu") in need["activation"]
    db = tmp_path / "fake.db"
    assert mainjob.cli(["profile", "--device", "fake", "--budget", "1s", "--db", str(db), "--layers", "linear"]) == 0
    assert min(_counts(db, need).values()) < mainjob.MIN_SAMPLES  # most needed families have nothing yet
    assert mainjob.top_up(db, "fake", extra_s=30) == 0
    assert min(_counts(db, need).values()) >= mainjob.MIN_SAMPLES
    with Store.open(db) as store:  # and ReLU, which DeepSense runs, was measured
        assert any(m.config.get("kind") == "relu" for m in store.measurements(kind="layer", family="activation"))
    assert "too few measurements for a model of" in capsys.readouterr().out
    assert mainjob.top_up(db, "fake", extra_s=30) == 0  # nothing short: no profiling
    assert "too few" not in capsys.readouterr().out
