"""Derived quantities of the three kinds (tilt, level/rise, wind/gust/load) and the adaptive scheduler."""

from __future__ import annotations

import math

import pytest

from agent import calibrate
from agent.a02yyuw import A02YYUW
from agent.errors import SensorFault
from agent.hx711 import HX711
from agent.lis3dh import LIS3DH
from agent.manhole import ManholeSensor, tilt_deg
from agent.scheduler import Scheduler
from agent.water import Median, Slope, WaterSensor
from agent.wind import WindSensor, WindStats
from tests.fakebus import FakeClock, FakeHX711, FakeI2C, FakeLIS3DH, FakePin, FakeUART, a02_frame
from tests.mpvm import check_micropython


def _rot_x(v, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return (v[0], c * v[1] - s * v[2], s * v[1] + c * v[2])


def _rot_y(v, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return (c * v[0] + s * v[2], v[1], -s * v[0] + c * v[2])


# ---------------------------------------------------------------- tilt geometry


@pytest.mark.parametrize("deg", [0.01, 0.5, 15.0, 45.0, 90.0, 179.0])
def test_tilt_is_the_angle_between_gravity_and_baseline(deg):
    assert tilt_deg(_rot_x((0, 0, 1), deg), (0, 0, 1)) == pytest.approx(deg, abs=1e-6)


def test_tilt_does_not_depend_on_mounting_orientation_or_magnitude():
    base = _rot_y(_rot_x((0, 0, 1), 70), 30)  # chip mounted at an odd angle
    tilted = _rot_y(_rot_x((0, 0, 1), 82), 30)
    assert tilt_deg([2 * c for c in tilted], base) == pytest.approx(12, abs=1e-6)


def _manhole(mount=(0.0, 0.0, 1.0), with_pin=True):
    bus = FakeI2C()
    pin = FakePin(0) if with_pin else None
    chip = FakeLIS3DH(pin)
    bus.devices[0x18] = chip
    chip.set_g(*mount)
    sensor = ManholeSensor(LIS3DH(bus), pin)
    return sensor, chip, pin, bus


def _no_sleep(ms):
    pass


def test_manhole_tilt_from_calibrated_baseline():
    mount = _rot_y((0, 0, 1), 40)  # sensor bolted on at 40 degrees
    sensor, chip, _, _ = _manhole(mount)
    sensor.setup()
    cal = calibrate.run(sensor, sleep=_no_sleep)
    assert (cal["base_x"], cal["base_z"]) == pytest.approx((mount[0], mount[2]), abs=0.002)
    chip.set_g(*_rot_y(mount, 20))  # the cover tips 20 degrees
    for t in range(20):
        sensor.sample(t * 100)
    assert sensor.values()["tilt"] == pytest.approx(20, abs=0.2)
    assert sensor.values()["accel"] == pytest.approx(9.81, abs=0.05)


def test_manhole_calibration_refuses_a_moving_cover():
    sensor, chip, _, _ = _manhole((0.0, 0.0, 0.5))
    sensor.setup()
    with pytest.raises(SensorFault, match="manhole_not_at_rest"):
        calibrate.run(sensor, sleep=_no_sleep)


def test_manhole_knock_does_not_move_tilt_but_raises_one_impact_event():
    sensor, chip, _, _ = _manhole()
    sensor.setup()
    sensor.sample(0)
    for t in (1, 2, 3):
        chip.set_g(1.5, 1.5, 1.2)  # |a| = 2.4 g, each axis inside the +-2 g range
        sensor.sample(t)
    chip.set_g(0, 0, 1)
    sensor.sample(4)
    assert sensor.values()["tilt"] == pytest.approx(0, abs=0.1)
    events = sensor.events()
    assert [e[0] for e in events] == ["impact"]
    assert events[0][1] == pytest.approx(math.sqrt(1.5**2 + 1.5**2 + 1.2**2) * 9.80665, rel=0.01)
    assert sensor.events() == []


def test_manhole_lift_event_once_per_excursion():
    sensor, chip, _, _ = _manhole()
    sensor.setup()
    for t, g in enumerate([1.0, 0.1, 0.05, 0.2, 1.0, 0.1, 1.0]):
        chip.set_g(0, 0, g)
        sensor.sample(t)
    assert [e[0] for e in sensor.events()] == ["lift", "lift"]


def test_manhole_interrupt_wakes_and_is_cleared_by_the_next_sample():
    sensor, chip, pin, _ = _manhole()
    sensor.setup()
    sensor.sample(0)
    assert not sensor.moving()
    chip.activity()
    assert sensor.woken and sensor.moving() and sensor.wakes == 1
    assert pin.value() == 1
    sensor.sample(1)
    assert not sensor.woken and pin.value() == 0


def test_manhole_reconfigures_after_the_chip_comes_back():
    sensor, chip, _, bus = _manhole()
    sensor.setup()
    bus.fail = True
    with pytest.raises(SensorFault):
        sensor.sample(0)
    assert sensor.fault == "lis3dh_io"
    bus.fail = False
    chip.regs[0x20] = 0  # the chip lost power and its settings
    sensor.sample(1)
    assert chip.regs[0x20] == 0x47


def test_manhole_near_threshold_is_moving():
    sensor, chip, _, _ = _manhole()
    sensor.setup()
    sensor.set_thresholds({"tilt": 15.0})
    chip.set_g(*_rot_x((0, 0, 1), 14))
    for t in range(10):
        sensor.sample(t)
    assert not sensor.changing() and sensor.near() and sensor.moving()


# ---------------------------------------------------------------- water


def test_median_removes_single_echoes():
    med = Median(5)
    out = [med.push(v) for v in [1000, 1001, 300, 1002, 1000, 999, 4000, 1001]]
    assert max(out[2:]) <= 1002 and min(out) >= 1000


def test_slope_per_minute_of_a_linear_series():
    slope = Slope(points=32, window_ms=120000)
    for k in range(10):
        slope.add(k * 6000, 2.0 + 0.1 * k)  # 0.1 per 6 s = 1 per minute
    assert slope.per_minute(54000) == pytest.approx(1.0)


def _water(mount_mm=2000):
    uart = FakeUART()
    return WaterSensor(A02YYUW(uart), {"mount_mm": mount_mm}), uart


def test_water_level_is_mounting_height_minus_distance():
    sensor, uart = _water(2000)
    uart.feed(a02_frame(1850))
    sensor.sample(0)
    v = sensor.values()
    assert v["level"] == pytest.approx(15.0) and v["dist"] == 1850
    assert "rise" not in v


def test_water_level_never_negative_and_uncalibrated_has_no_level():
    sensor, uart = _water(2000)
    uart.feed(a02_frame(2010))
    sensor.sample(0)
    assert sensor.values()["level"] == 0.0
    raw = WaterSensor(A02YYUW(uart), None)
    uart.feed(a02_frame(1500))
    raw.sample(0)
    assert raw.values() == {"dist": 1500.0}


def test_water_rise_rate_and_spike_rejection():
    sensor, uart = _water(2000)
    levels = []
    for k in range(30):  # water rises 2 cm per minute, sampled every 3 s, one echo from a car at k=12
        mm = 1900 - k
        uart.feed(a02_frame(300 if k == 12 else mm))
        sensor.sample(k * 3000)
        levels.append(sensor.values()["level"])
    assert max(b - a for a, b in zip(levels[:-1], levels[1:], strict=True)) < 0.5  # no jump from the echo
    assert sensor.values()["rise"] == pytest.approx(2.0, rel=0.05)
    assert sensor.changing()


def test_water_calibrate_measures_the_dry_street():
    clock = FakeClock()
    uart = FakeUART()
    frames = [a02_frame(mm) for mm in [2003, 2001, 1998, 2000, 2002, 600, 2001, 1999, 2000]]

    def sleep(ms):  # the sensor sends a frame while the calibration waits
        clock.sleep_ms(ms)
        if frames:
            uart.feed(frames.pop(0))

    sensor = WaterSensor(A02YYUW(uart), None)
    assert calibrate.run(sensor, readings=9, sleep=sleep, ticks=clock.ticks_ms) == {"mount_mm": 2000}
    assert sensor.mount_mm == 2000
    with pytest.raises(SensorFault, match="level_calibration"):
        calibrate.run(sensor, readings=9, timeout_ms=1000, sleep=sleep, ticks=clock.ticks_ms)


def test_water_silence_is_a_fault_recorded_on_the_sensor():
    sensor, uart = _water()
    uart.feed(a02_frame(1900))
    sensor.sample(0)
    with pytest.raises(SensorFault):
        sensor.sample(10000)
    assert sensor.fault == "level_no_frames"


# ---------------------------------------------------------------- wind


def test_gust_is_the_highest_three_second_mean():
    stats = WindStats()
    for v in [5, 5, 10, 30, 29, 10, 5, 5, 40, 5, 5]:
        stats.push(v)
    # 3-s means: ..., (10+30+29)/3 = 23, (30+29+10)/3 = 23, (5+40+5)/3 = 16.7: a single 1-s spike is not a gust
    assert stats.gust() == pytest.approx(23.0)


def test_gust_window_forgets_after_ten_minutes_and_mean10_is_the_last_600_s():
    stats = WindStats()
    for _ in range(3):
        stats.push(30)
    for _ in range(600):
        stats.push(4)
    assert stats.gust() == pytest.approx(4.0)
    assert stats.mean10() == pytest.approx(4.0)
    for _ in range(300):
        stats.push(10)
    assert stats.mean10() == pytest.approx(7.0)


class _Anemo:
    """Stands in for the Anemometer driver: speeds (m/s) from a list, one per call."""

    factor = 0.667

    def __init__(self, speeds):
        self.speeds = list(speeds)

    def setup(self):
        pass

    def poll(self, now_ms):
        return 0.0

    def speed(self, now_ms):
        return self.speeds.pop(0)


def test_wind_sensor_books_seconds_and_reports_gust_and_mean():
    sensor = WindSensor(_Anemo([3, 3, 20, 20, 20, 3]), None)
    sensor.setup()
    sensor.sample(0)
    for t in (1000, 2000, 3000, 4000, 5000):
        sensor.sample(t)
    sensor.sample(10000)  # a slow sample books 5 seconds of 3 m/s
    v = sensor.values()
    assert v["wind"] == 3 and v["gust"] == pytest.approx(20.0)
    assert v["wind10"] == pytest.approx((3 + 3 + 20 * 3 + 3 * 5) / 10)
    assert sensor.stats.count == 10


def test_wind_load_after_tare_and_span():
    clock = FakeClock()
    chip = FakeHX711(clock, [1000, 1010, 990, 1000, 8200, 8200, 4600])
    cell = HX711(chip.clk, chip.dout, disable_irq=chip.disable_irq, enable_irq=chip.enable_irq,
                 ticks=clock.ticks_us, sleep=clock.sleep_ms)
    sensor = WindSensor(_Anemo([0.0] * 10), cell, {"scale": 100.0})
    sensor.setup()
    assert calibrate.run(sensor, readings=4)["tare"] == pytest.approx(1000)
    assert calibrate.span(sensor, 72.0, readings=2)["scale"] == pytest.approx(100.0)
    clock.advance_ms(20)
    sensor.sample(clock.ticks_ms())
    assert sensor.values()["load"] == pytest.approx(36.0)


def test_wind_silent_load_cell_is_a_fault_after_two_seconds():
    clock = FakeClock()
    chip = FakeHX711(clock, [])
    cell = HX711(chip.clk, chip.dout, ticks=clock.ticks_us, sleep=clock.sleep_ms)
    sensor = WindSensor(_Anemo([1.0] * 10), cell, None)
    sensor.setup()
    sensor.sample(0)
    sensor.sample(1000)
    with pytest.raises(SensorFault, match="hx711_timeout"):
        sensor.sample(3000)
    assert sensor.values()["wind"] == 1.0  # the wind was booked before the fault
    assert sensor.fault == "hx711_timeout"


def test_wind_load_silence_counts_only_while_the_node_looks():
    """A node busy elsewhere for seconds (a config change, a reconnect) has not heard a silent cell: the
    silence runs from the first look that found no conversion, not from the last word. (A conversion
    keeps DOUT low until it is read, so two silent looks do prove the silence between them.)"""
    clock = FakeClock()
    chip = FakeHX711(clock, [1000, 1000])
    cell = HX711(chip.clk, chip.dout, ticks=clock.ticks_us, sleep=clock.sleep_ms)
    sensor = WindSensor(_Anemo([1.0] * 10), cell, {"tare": 0.0, "scale": 100.0})
    sensor.setup()
    sensor.sample(0)
    assert sensor.values()["load"] == 10.0
    chip.values = []  # from now on no conversion comes
    sensor.sample(5000)  # the first look in 5 s finds none: not yet a fault
    sensor.sample(6000)
    with pytest.raises(SensorFault, match="hx711_timeout"):
        sensor.sample(7500)  # 2.5 s of looks without a conversion
    chip.values = [1000]
    clock.advance_ms(100)
    sensor.sample(8000)  # it answers again: the count starts over
    chip.values = []
    sensor.sample(9000)
    sensor.sample(10500)


def test_wind_garbled_load_words_are_not_silence():
    """Words the driver discards (saturated, or a read stretched by an interrupt) are the chip answering:
    a run of them is hx711_garbage, never hx711_timeout."""
    clock = FakeClock()
    chip = FakeHX711(clock, [0x7FFFFF] * 20)  # saturated words: discarded by the driver
    cell = HX711(chip.clk, chip.dout, ticks=clock.ticks_us, sleep=clock.sleep_ms)
    sensor = WindSensor(_Anemo([1.0] * 10), cell, {"tare": 1000.0, "scale": 100.0})
    sensor.setup()
    faults = []
    for t in range(0, 8000, 1000):
        clock.advance_ms(200)  # the next conversion is ready
        try:
            sensor.sample(t)
        except SensorFault as fault:
            faults.append(fault.code)
    assert faults and set(faults) == {"hx711_garbage"}
    assert "load" not in sensor.values()


# ---------------------------------------------------------------- scheduler


def test_scheduler_goes_fast_at_once_and_slow_only_after_the_hold():
    sched = Scheduler(1000, 60000, hold_ms=30000)
    assert sched.done(0, busy=False) == 60000
    assert sched.done(60000, busy=True) == 1000
    t = 61000
    while t < 60000 + 30000:
        assert sched.done(t, busy=False) == 1000
        t += 1000
    assert sched.done(t, busy=False) == 60000
    assert sched.switches == 2 and not sched.fast


def test_scheduler_does_not_flip_on_a_wobbling_value():
    sched = Scheduler(1000, 60000, hold_ms=30000)
    periods = [sched.done(k * 1000, busy=(k % 2 == 0)) for k in range(50)]
    assert set(periods) == {1000} and sched.switches == 1


def test_scheduler_hold_survives_the_tick_counter_wrapping():
    wrap = 1 << 30  # time.ticks_ms() wraps here on MicroPython; ticks_diff() is plain subtraction on CPython
    sched = Scheduler(100, 10000, hold_ms=5000)
    assert sched.done(wrap - 1000, busy=True) == 100
    assert sched.done(wrap + 3000, busy=False) == 100
    assert sched.done(wrap + 4000, busy=False) == 10000


def test_scheduler_takes_the_sensors_periods_and_refuses_bad_ones():
    sensor, _ = _water()
    sched = Scheduler(sensor.interval_ms(True), sensor.interval_ms(False))  # as agent/app.py builds it
    assert (sched.fast_ms, sched.slow_ms, sched.hold_ms) == (2000, 60000, 60000)
    with pytest.raises(ValueError):
        Scheduler(5000, 1000)


# ---------------------------------------------------------------- the same physics under the MicroPython VM

VM_PHYSICS = r"""
import math
from agent import calibrate
from agent.manhole import ManholeSensor, tilt_deg
from agent.lis3dh import LIS3DH
from agent.water import WaterSensor, Median
from agent.a02yyuw import A02YYUW
from agent.wind import WindStats
from agent.scheduler import Scheduler
from tests.fakebus import FakeI2C, FakeLIS3DH, FakePin, FakeUART, a02_frame

c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
print("tilt", "%.4f" % tilt_deg((0.0, -s, c), (0.0, 0.0, 1.0)))

bus = FakeI2C()
pin = FakePin(0)
chip = FakeLIS3DH(pin)
bus.devices[0x18] = chip
chip.set_g(0.0, 0.0, 1.0)
man = ManholeSensor(LIS3DH(bus), pin)
man.setup()
calibrate.run(man, 8, sleep=lambda ms: None)
chip.set_g(0.0, -s, c)
for t in range(20):
    man.sample(t)
chip.set_g(0.0, 0.0, 0.1)
man.sample(21)
chip.activity()
woken = man.woken
man.sample(22)
print("manhole", "%.1f" % man.values()["tilt"], man.events()[0][0], woken, man.woken, man.flag is not None)

uart = FakeUART()
water = WaterSensor(A02YYUW(uart), {"mount_mm": 2000})
for k in range(30):
    uart.feed(a02_frame(300 if k == 12 else 1900 - k))
    water.sample(k * 3000)
v = water.values()
print("water", "%.1f" % v["level"], "%.2f" % v["rise"], v["dist"])
m = Median(5)
print("median", [m.push(x) for x in [1000, 1001, 300, 1002, 1000]])

stats = WindStats()
for x in [5, 5, 10, 30, 29, 10, 5, 5, 40, 5, 5]:
    stats.push(x)
print("wind", "%.2f" % stats.gust(), "%.2f" % stats.mean10())

sched = Scheduler(1000, 60000, hold_ms=30000)
print("sched", [sched.done(k * 1000, k % 2 == 0) for k in range(4)], sched.switches)
"""

VM_EXPECTED = """\
tilt 20.0000
manhole 20.0 lift True False {flag}
water 12.7 1.95 1873.0
median [1000, 1001, 1000, 1001, 1000]
wind 23.00 13.55
sched [1000, 1000, 1000, 1000] 1
"""


def test_physics_script_under_cpython(capsys):
    exec(compile(VM_PHYSICS, "vm_physics", "exec"), {})
    # CPython's asyncio has no ThreadSafeFlag: the sensor falls back to the `woken` attribute.
    assert capsys.readouterr().out == VM_EXPECTED.format(flag=False)


@pytest.mark.micropython
def test_physics_under_micropython():
    assert check_micropython(VM_PHYSICS) == VM_EXPECTED.format(flag=True)


@pytest.mark.micropython
def test_kind_modules_import_within_the_device_heap():
    out = check_micropython(
        "import agent.manhole, agent.water, agent.wind, agent.scheduler\nprint('ok')", heap="110k"
    )
    assert out.strip() == "ok"
