"""The agent's sensor drivers against byte-level chip fakes (tests/fakebus.py), under CPython and the VM."""

from __future__ import annotations

import pytest

from agent import calibrate
from agent.a02yyuw import A02YYUW
from agent.anemometer import Anemometer
from agent.errors import AgentError, SensorFault
from agent.hx711 import FAULT_LIMIT, HX711
from agent.lis3dh import LIS3DH
from agent.sensing import make_sensor
from tests.fakebus import FakeClock, FakeHX711, FakeI2C, FakeLIS3DH, FakePin, FakeUART, a02_frame
from tests.mpvm import check_micropython

MANHOLE, WATER, WIND = "manhole-tilt", "water-level", "wind-load"

# ---------------------------------------------------------------- LIS3DH


def _lis(with_pin=False):
    bus = FakeI2C()
    pin = FakePin(0) if with_pin else None
    chip = FakeLIS3DH(pin)
    bus.devices[0x18] = chip
    return bus, chip, pin


def test_lis3dh_setup_writes_rate_resolution_and_range():
    bus, chip, _ = _lis()
    LIS3DH(bus, rate_hz=100).setup()
    assert chip.regs[0x20] == 0x57  # ODR 100 Hz, X/Y/Z enabled
    assert chip.regs[0x23] == 0x88  # BDU, high resolution, +-2 g


def test_lis3dh_reads_signed_12_bit_axes_in_one_burst():
    bus, chip, _ = _lis()
    acc = LIS3DH(bus)
    acc.setup()
    chip.set_g(0.5, -0.25, -1.0)
    assert acc.read_raw() == [500, -250, -1000]
    x, y, z = acc.read_g()
    assert (x, y, z) == pytest.approx((0.5, -0.25, -1.0))


def test_lis3dh_without_auto_increment_would_read_one_register_six_times():
    # Guards the fake: the chip only auto-increments with bit 7 set, so the driver's 0x80 matters.
    bus, chip, _ = _lis()
    chip.set_g(0.5, 0.0, 1.0)
    buf = bytearray(6)
    bus.readfrom_mem_into(0x18, 0x28, buf)
    assert len(set(buf)) == 1


def test_lis3dh_missing_and_wrong_identity_are_faults():
    bus = FakeI2C()
    with pytest.raises(SensorFault) as missing:
        LIS3DH(bus).setup()
    assert missing.value.code == "lis3dh_missing"
    chip = FakeLIS3DH()
    chip.regs[0x0F] = 0x44
    bus.devices[0x18] = chip
    with pytest.raises(SensorFault) as wrong:
        LIS3DH(bus).setup()
    assert wrong.value.code == "lis3dh_bad_id"
    assert isinstance(wrong.value, AgentError)


def test_lis3dh_bus_error_while_reading_is_transient_fault():
    bus, _, _ = _lis()
    acc = LIS3DH(bus)
    acc.setup()
    bus.fail = True
    with pytest.raises(SensorFault) as err:
        acc.read_g()
    assert err.value.code == "lis3dh_io" and err.value.transient


def test_lis3dh_activity_interrupt_configuration_and_clear():
    bus, chip, pin = _lis(with_pin=True)
    acc = LIS3DH(bus)
    acc.setup()
    acc.enable_activity_int(threshold_mg=160, duration_samples=2)
    assert chip.regs[0x21] == 0x01  # high-pass filter on the INT1 path
    assert chip.regs[0x22] == 0x40  # IA1 on INT1
    assert chip.regs[0x24] & 0x08  # latched
    assert chip.regs[0x30] == 0x2A  # OR of X/Y/Z high events
    assert chip.regs[0x32] == 10  # 160 mg / 16 mg
    assert chip.regs[0x33] == 2
    chip.activity()
    assert pin.value() == 1
    assert acc.clear_int() is True
    assert pin.value() == 0
    assert acc.clear_int() is False


# ---------------------------------------------------------------- A02YYUW


def test_a02_parses_frames_split_across_polls():
    uart = FakeUART()
    ranger = A02YYUW(uart)
    frame = a02_frame(1234)
    uart.feed(frame[:2])
    assert ranger.poll(0) is None
    uart.feed(frame[2:] + a02_frame(1240)[:1])
    assert ranger.poll(100) == 1234
    uart.feed(a02_frame(1240)[1:])
    assert ranger.poll(200) == 1240
    assert ranger.frames == 2 and ranger.bad_checksum == 0


def test_a02_resynchronises_after_garbage_and_drops_bad_checksums():
    uart = FakeUART()
    ranger = A02YYUW(uart)
    bad = bytearray(a02_frame(800))
    bad[3] ^= 0x55
    # junk, a corrupted frame, a stray 0xFF just before a good frame, and a frame whose checksum is 0xFF
    uart.feed(b"\x12\x34" + bytes(bad) + b"\xff" + a02_frame(900) + a02_frame(511))
    got = ranger.poll(0)
    assert ranger.bad_checksum >= 1
    assert got == 511  # the newest good frame (its low byte and checksum are 0xFF)
    assert ranger.frames == 2
    assert ranger.junk >= 2


def test_a02_header_inside_a_frame_is_found_again():
    uart = FakeUART()
    ranger = A02YYUW(uart)
    # A lost byte: the 0xFF of the next frame lands inside the frame we locked on.
    uart.feed(b"\xff\x03" + a02_frame(1000))
    assert ranger.poll(0) == 1000
    assert ranger.bad_checksum == 1


def test_a02_drops_blind_zone_and_out_of_range_readings():
    uart = FakeUART()
    ranger = A02YYUW(uart)
    uart.feed(a02_frame(20) + a02_frame(5000))
    assert ranger.poll(0) is None
    assert ranger.out_of_range == 2
    uart.feed(a02_frame(30))
    assert ranger.poll(1) == 30


def test_a02_reads_only_what_any_reports():
    uart = FakeUART()
    uart.max_any = 3
    ranger = A02YYUW(uart)
    uart.feed(a02_frame(500) + a02_frame(501))
    assert ranger.poll(0) is None  # 3 bytes so far
    assert ranger.poll(1) == 500  # bytes 4-6: the 4th completes the first frame
    assert uart.any() == 2
    assert ranger.poll(2) == 501
    assert ranger.poll(3) is None


def test_a02_silence_and_garbage_are_faults():
    uart = FakeUART()
    ranger = A02YYUW(uart, silence_ms=1000)
    uart.feed(a02_frame(500))
    assert ranger.poll(0) == 500
    ranger.poll(900)
    with pytest.raises(SensorFault) as silent:
        ranger.poll(1500)
    assert silent.value.code == "level_no_frames"
    uart.feed(b"\x00" * 8)  # bytes again, but no valid frame since t=0
    with pytest.raises(SensorFault) as garbage:
        ranger.poll(1600)
    assert garbage.value.code == "level_garbage"
    uart.feed(a02_frame(700))
    assert ranger.poll(1700) == 700  # a good frame ends the fault
    assert ranger.poll(1800) is None


# ---------------------------------------------------------------- anemometer


def _reed_pulse(pin, clock, bounces=3):
    """One reed closure: falling edge with contact bounce of 0.2 ms steps, then open again."""
    for _ in range(bounces):
        pin.drive(0)
        clock.advance_us(200)
        pin.drive(1)
        clock.advance_us(200)
    pin.drive(0)
    clock.advance_us(2000)
    pin.drive(1)


def _spin(pin, clock, hz, seconds):
    period_us = int(1000000 / hz)
    for _ in range(int(hz * seconds)):
        start = clock.us
        _reed_pulse(pin, clock)
        clock.us = start + period_us


def test_anemometer_counts_debounced_falling_edges():
    clock = FakeClock()
    pin = FakePin(1)
    anemo = Anemometer(pin, ticks=clock.ticks_ms)
    anemo.setup()
    assert pin.trigger == FakePin.IRQ_FALLING and pin.handler is not None
    _spin(pin, clock, 10, 2)
    assert anemo.count == 20
    assert anemo.bounces == 20 * 3


def test_anemometer_rate_between_edges_is_not_quantised():
    clock = FakeClock(1000)
    pin = FakePin(1)
    anemo = Anemometer(pin, ticks=clock.ticks_ms)
    anemo.setup()
    anemo.poll(clock.ticks_ms())
    _spin(pin, clock, 3.0, 1)
    anemo.poll(clock.ticks_ms())
    # 3.0 Hz; a 1-s window count would give 3 or 4 pulses and so 2.0 or 2.67 m/s.
    for _ in range(3):
        _spin(pin, clock, 3.0, 1)
        assert anemo.speed(clock.ticks_ms()) == pytest.approx(3.0 * 0.667, rel=0.01)


def test_anemometer_stopping_rotor_decays_to_zero():
    clock = FakeClock(1000)
    pin = FakePin(1)
    anemo = Anemometer(pin, ticks=clock.ticks_ms, stall_ms=3000)
    anemo.setup()
    anemo.poll(clock.ticks_ms())
    _spin(pin, clock, 5, 2)
    assert anemo.poll(clock.ticks_ms()) == pytest.approx(5, rel=0.02)
    clock.advance_ms(1000)
    assert anemo.poll(clock.ticks_ms()) < 1.0
    clock.advance_ms(3000)
    assert anemo.poll(clock.ticks_ms()) == 0.0


# ---------------------------------------------------------------- HX711


def _hx(values, **kw):
    clock = FakeClock()
    chip = FakeHX711(clock, values)
    protect = kw.pop("protect", True)
    hx = HX711(chip.clk, chip.dout, disable_irq=chip.disable_irq if protect else None,
               enable_irq=chip.enable_irq if protect else None, ticks=clock.ticks_us,
               sleep=clock.sleep_ms, **kw)
    hx.setup()
    return hx, chip, clock


def test_hx711_reads_signed_24_bit_msb_first_with_25_clocks():
    hx, chip, _ = _hx([1000, -5, -8388607, 8388606])
    assert hx.read() == 1000
    assert chip.pulses == 25
    assert [hx.read(), hx.read(), hx.read()] == [-5, -8388607, 8388606]
    assert chip.gain_pulses == 1


@pytest.mark.parametrize("gain, extra", [(64, 3), (32, 2)])
def test_hx711_gain_selects_extra_clocks(gain, extra):
    hx, chip, _ = _hx([1, 2], gain=gain)
    hx.read()
    hx.read()
    assert chip.gain_pulses == extra


def test_hx711_irq_protection_keeps_a_stretched_pulse_out():
    hx, chip, _ = _hx([4242])
    chip.stretch(pulse=7, us=200)
    assert hx.read() == 4242
    assert chip.powerdowns == 0
    assert chip.irq_enabled is True  # restored after the read


def test_hx711_unprotected_stretched_read_is_discarded_not_returned():
    hx, chip, _ = _hx([4242, 4343], protect=False)
    chip.stretch(pulse=7, us=200)
    assert hx.read() is None
    assert chip.powerdowns == 1
    assert hx.discarded == 1 and hx.last_fault == "stretched"
    assert hx.read() == 4343  # the chip came back; the next conversion is good


def test_hx711_stretch_would_corrupt_without_the_check():
    # Guards the fake: with the timing check off, a stretched pulse yields a wrong number.
    hx, chip, _ = _hx([4242], protect=False, max_high_us=10**6)
    chip.stretch(pulse=7, us=200)
    value = hx.read()
    assert value is not None and value != 4242


def test_hx711_saturation_discarded_and_repeated_garbage_is_a_fault():
    hx, _, _ = _hx([0x7FFFFF, -0x800000] + [0x7FFFFF] * FAULT_LIMIT)
    assert hx.read() is None
    assert hx.read() is None
    assert hx.last_fault == "saturated"
    with pytest.raises(SensorFault) as err:
        for _ in range(FAULT_LIMIT):
            hx.read()
    assert err.value.code == "hx711_garbage"


def test_hx711_slow_read_discarded():
    hx, _, _ = _hx([10], max_read_us=20)
    assert hx.read() is None and hx.last_fault == "slow"


def test_hx711_dout_low_after_the_word_is_discarded():
    hx, chip, _ = _hx([10, 20])
    chip.conv_us = 0  # next conversion "ready" at once: DOUT low right after the 25th pulse
    assert hx.read() is None and hx.last_fault == "dout_low"


def test_hx711_missing_chip_times_out():
    hx, chip, clock = _hx([1])
    chip.present = False
    with pytest.raises(SensorFault) as err:
        hx.read(timeout_ms=200)
    assert err.value.code == "hx711_timeout"
    assert clock.us >= 200000


def test_hx711_average_skips_discarded_reads():
    hx, _, _ = _hx([100, 0x7FFFFF, 110, 120])
    assert calibrate.average(hx, 3) == pytest.approx(110)


# ---------------------------------------------------------------- make_sensor


class _Board:
    NAME = "fake"

    def __init__(self):
        self.bus = FakeI2C()
        self.int_pin = FakePin(0)
        self.bus.devices[0x18] = FakeLIS3DH(self.int_pin)
        self.uart = FakeUART()
        self.reed = FakePin(1)
        self.clock = FakeClock()
        self.cell = FakeHX711(self.clock, [5])

    def i2c(self):
        return self.bus

    def accel_int_pin(self):
        return self.int_pin

    def level_uart(self):
        return self.uart

    def anemometer_pin(self):
        return self.reed

    def hx711_pins(self):
        return self.cell.clk, self.cell.dout

    def disable_irq(self):
        return self.cell.disable_irq()

    def enable_irq(self, state):
        self.cell.enable_irq(state)


def test_make_sensor_builds_each_kind_without_touching_chips():
    board = _Board()
    for kind in (MANHOLE, WATER, WIND):
        sensor = make_sensor(kind, board, None)
        assert sensor.KIND == kind
        assert sensor.interval_ms(True) < sensor.interval_ms(False)
    assert board.int_pin.handler is None and board.reed.handler is None
    with pytest.raises(AgentError, match="unknown sensor kind"):
        make_sensor("toaster", board)


def test_make_sensor_wind_uses_the_boards_irq_functions():
    board = _Board()
    sensor = make_sensor(WIND, board, {"tare": 5, "scale": 1.0})
    sensor.setup()
    board.clock.advance_ms(20)
    sensor.sample(board.clock.ticks_ms())
    assert board.cell.irq_toggles == 1
    assert sensor.values()["load"] == 0.0


# ---------------------------------------------------------------- the same under the MicroPython VM

VM_DRIVERS = r"""
from tests.fakebus import FakeClock, FakeHX711, FakeI2C, FakeLIS3DH, FakePin, FakeUART, a02_frame
from agent.lis3dh import LIS3DH
from agent.a02yyuw import A02YYUW
from agent.anemometer import Anemometer
from agent.hx711 import HX711
from agent.errors import SensorFault

bus = FakeI2C()
pin = FakePin(0)
chip = FakeLIS3DH(pin)
bus.devices[0x18] = chip
acc = LIS3DH(bus)
acc.setup()
acc.enable_activity_int(160)
chip.set_g(0.5, -0.25, -1.0)
print("lis", acc.read_raw(), chip.regs[0x20], chip.regs[0x23], chip.regs[0x32])
chip.activity()
print("int", pin.value(), acc.clear_int(), pin.value())
try:
    LIS3DH(FakeI2C()).setup()
except SensorFault as f:
    print("fault", f.code)

uart = FakeUART()
ranger = A02YYUW(uart)
bad = bytearray(a02_frame(800))
bad[3] ^= 0x55
uart.feed(b"\x12" + bytes(bad) + b"\xff\x03" + a02_frame(900)[:2])
r1 = ranger.poll(0)
uart.feed(a02_frame(900)[2:] + a02_frame(10))
print("a02", r1, ranger.poll(1), ranger.frames, ranger.bad_checksum, ranger.out_of_range)

clock = FakeClock(1000)
reed = FakePin(1)
anemo = Anemometer(reed, ticks=clock.ticks_ms)
anemo.setup()
anemo.poll(clock.ticks_ms())
for second in range(2):
    for k in range(4):
        start = clock.us
        for b in range(3):
            reed.drive(0)
            clock.advance_us(200)
            reed.drive(1)
            clock.advance_us(200)
        reed.drive(0)
        clock.us = start + 250000
        reed.drive(1)
    hz = anemo.poll(clock.ticks_ms())
print("anemo", anemo.count, anemo.bounces, "%.2f" % hz)

hxc = FakeHX711(clock, [1000, -5, 4242, 4343, 77])
hx = HX711(hxc.clk, hxc.dout, disable_irq=hxc.disable_irq, enable_irq=hxc.enable_irq,
           ticks=clock.ticks_us, sleep=clock.sleep_ms)
hx.setup()
a = hx.read()
b = hx.read()
hxc.stretch(7, 200)
c = hx.read()
hx2 = HX711(hxc.clk, hxc.dout, ticks=clock.ticks_us, sleep=clock.sleep_ms)
hxc.stretch(7, 200)
d = hx2.read()
e = hx2.read()
print("hx", a, b, c, d, hx2.last_fault, hxc.powerdowns, e)
"""

VM_EXPECTED = """\
lis [500, -250, -1000] 71 136 10
int 1 True 0
fault lis3dh_missing
a02 None 900 2 2 1
anemo 8 24 4.00
hx 1000 -5 4242 None stretched 1 77
"""


def test_vm_script_gives_expected_output_under_cpython(capsys):
    exec(compile(VM_DRIVERS, "vm_drivers", "exec"), {})
    assert capsys.readouterr().out == VM_EXPECTED


@pytest.mark.micropython
def test_drivers_under_micropython():
    assert check_micropython(VM_DRIVERS) == VM_EXPECTED


@pytest.mark.micropython
def test_driver_modules_import_within_the_device_heap():
    out = check_micropython(
        "import agent.lis3dh, agent.a02yyuw, agent.anemometer, agent.hx711, agent.sensing\nprint('ok')",
        heap="110k",
    )
    assert out.strip() == "ok"


VM_NO_ALLOC = r"""
import micropython
from tests.fakebus import FakeClock, FakeHX711, FakeI2C, FakeLIS3DH, FakePin
from agent.anemometer import Anemometer
from agent.hx711 import HX711
from agent.lis3dh import LIS3DH
from agent.manhole import ManholeSensor

clock = FakeClock(1000)
reed = FakePin(1)
anemo = Anemometer(reed, ticks=clock.ticks_ms)
anemo.setup()
bus = FakeI2C()
pin = FakePin(0)
bus.devices[0x18] = FakeLIS3DH(pin)
man = ManholeSensor(LIS3DH(bus), pin)
man.setup()
chip = FakeHX711(clock, [123456])
hx = HX711(chip.clk, chip.dout, ticks=clock.ticks_us)
micropython.heap_lock()
try:
    anemo._handler(reed)
    clock.advance_us(20000)
    anemo._handler(reed)
    clock.advance_us(1000)
    anemo._handler(reed)
    man._handler(pin)
    raw = hx.read_raw()
finally:
    micropython.heap_unlock()
print(anemo.count, anemo.bounces, man.woken, raw)
"""


@pytest.mark.micropython
def test_irq_handlers_and_hx711_bit_loop_do_not_allocate():
    # With the heap locked any allocation raises MemoryError: the IRQ handlers (hard IRQs on a board)
    # and the HX711 read (its IRQs-off loop, where a GC would stretch a clock pulse) must not allocate.
    assert check_micropython(VM_NO_ALLOC).split() == ["2", "1", "True", "123456"]
