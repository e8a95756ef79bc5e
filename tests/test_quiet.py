"""The quiet guard: time only while the machine runs at its uncontended speed."""

from __future__ import annotations

import json

from fastdeepiot.devices.quiet import QuietGuard
from fastdeepiot.profiling.harness import TimingPolicy, measure


class Clock:
    def __init__(self):
        self.ns = 0

    def __call__(self):
        return self.ns


def _guard(probes, clock=None, **kw):
    """A guard whose probe returns the given durations (ns) in turn, advancing the fake clock by each."""
    clock = clock or Clock()
    it = iter(probes)

    def probe():
        t = next(it)
        clock.ns += int(t)
        return t

    return QuietGuard(calibrate_s=0.0, clock_ns=clock, probe=probe, **kw), clock


def test_quiet_is_relative_to_the_fastest_probe_seen():
    g, _ = _guard([100, 100, 115, 130, 90, 100])
    assert g.quiet()          # calibrates at 100, then 100
    assert g.quiet()          # 115 <= 1.2 * 100
    assert not g.quiet()      # 130 > 120
    assert g.quiet() and g.best_ns == 90
    assert g.quiet()          # 100 <= 1.2 * 90
    assert g.best_ns == 90


def test_wait_quiet_waits_out_a_slow_period():
    g, _ = _guard([100] + [160] * 5 + [101], max_wait_s=10)
    assert g.wait_quiet()
    assert g.gave_up == 0


def test_wait_quiet_gives_up_and_adapts_to_a_slower_machine():
    # the remembered best (100) is unreachable now: every probe takes 150
    g, clock = _guard([100] + [150] * 10_000, max_wait_s=1e-6, reset_after=3)
    assert not g.wait_quiet() and not g.wait_quiet()
    assert g.best_ns == 100
    assert not g.wait_quiet()  # third consecutive give-up: the machine is slower now
    assert g.best_ns == 150 and g.gave_up == 3
    assert g.wait_quiet()


def test_best_probe_is_remembered_across_processes(tmp_path):
    mem = tmp_path / "quiet_probe.json"
    g, _ = _guard([100, 80], memory=mem)
    assert g.quiet()  # calibrates at 100, then sees 80
    assert list(json.loads(mem.read_text()).values()) == [80]
    g2, _ = _guard([120, 120], memory=mem)  # calibrates in a slow period: still knows 80
    assert not g2.quiet() and g2.best_ns == 80


def test_harness_drops_rounds_that_end_in_a_slow_period():
    class Runner:
        """Every call takes 1 ms in a quiet period and 2 ms in a slow one; the state changes per round."""

        def __init__(self, states):
            self.states = states
            self.round = 0
            self.guard = _StateGuard(self)

        def run_once(self):
            pass

        def time_calls(self, n):
            slow = self.states[min(self.round, len(self.states) - 1)]
            self.round += n >= 2  # warm-up calls (n=1) do not advance the state
            return [2.0 if slow else 1.0] * n

        def close(self):
            pass

    class _StateGuard:
        waited_s = 0.0

        def __init__(self, runner):
            self.r = runner

        def wait_quiet(self):
            return True

        def quiet(self):  # the state of the round that just ran
            return not self.r.states[min(self.r.round - 1, len(self.r.states) - 1)]

    pol = TimingPolicy(warmup_calls=1, warmup_ms=0, round_calls=10, min_calls=30, max_calls=30,
                       min_round_ms=0)
    r = Runner([False, True, False, True, True, False, False])
    t = measure(r, pol)
    assert t.median_ms == 1.0 and t.rel_iqr == 0.0 and t.dropped_rounds == 3 and t.n_calls == 30
    # without the guard the slow rounds would have been kept
    r = Runner([False, True, False, True, True, False, False])
    t = measure(r, TimingPolicy(**{**pol.__dict__, "wait_quiet": False, "max_remeasures": 0}))
    assert t.p90_ms == 2.0 and t.dropped_rounds == 0


def test_real_probe_and_the_switch(monkeypatch):
    from fastdeepiot.devices import quiet

    g = QuietGuard(calibrate_s=0.05)
    r = g.ratio()
    assert r >= 1.0 and g.best_ns > 0
    quiet.shared_guard.cache_clear()
    monkeypatch.setenv("FASTDEEPIOT_QUIET_GUARD", "0")
    assert quiet.shared_guard() is None
    quiet.shared_guard.cache_clear()


def test_a_measurement_stops_waiting_after_its_wait_budget():
    class Busy:
        """A guard that never sees quiet; each wait costs 4 s of (fake) time."""

        waited_s = 0.0

        def wait_quiet(self):
            self.waited_s += 4.0
            return False

        def quiet(self):
            return False

    class R:
        guard = Busy()

        def time_calls(self, n):
            return [1.0] * n

    t = measure(R(), TimingPolicy(warmup_calls=1, warmup_ms=0, min_calls=10, max_calls=50, max_wait_s=10,
                                  min_round_ms=0))
    assert t.median_ms == 1.0 and t.dropped_rounds == 3  # 3 waits (12 s > 10 s), then unguarded
