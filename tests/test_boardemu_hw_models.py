"""Unit tests of the emulator's chip models, world, scenarios and network gateway (CPython, no VM)."""

from __future__ import annotations

import json
import random
import socket
import threading
import time

import pytest

from tools.boardemu.hardware import Hardware
from tools.boardemu.hardware.a02yyuw import A02YYUW, BYTE_S, Uart, frame
from tools.boardemu.hardware.anemometer import Anemometer
from tools.boardemu.hardware.gateway import Gateway, loopback_target
from tools.boardemu.hardware.hx711 import HX711
from tools.boardemu.hardware.lis3dh import LIS3DH
from tools.boardemu.hardware.physics import World, parse
from tools.boardemu.hardware.scenario import Player, Scenario


def _until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


# --- LIS3DH -------------------------------------------------------------------------------------------
def _lis(accel=(0.0, 0.0, 1.0)):
    state = {"a": accel}
    edges = []
    chip = LIS3DH(lambda t: state["a"], lambda level, t: edges.append(level))
    return chip, state, edges


def _read(chip, reg, n, t):
    chip.i2c_write(bytes([reg]), t)
    return chip.i2c_read(n, t)


def test_lis3dh_identity_and_reset_values():
    chip, _, _ = _lis()
    assert _read(chip, 0x0F, 1, 0.0) == b"\x33"
    assert _read(chip, 0x20, 1, 0.0) == b"\x07"  # CTRL_REG1: power-down, XYZ enabled
    chip.i2c_write(b"\x0f\x00", 0.0)  # WHO_AM_I is read-only
    assert _read(chip, 0x0F, 1, 0.0) == b"\x33"


def test_lis3dh_high_resolution_output_with_auto_increment():
    chip, state, _ = _lis((0.5, -0.25, 1.0))
    chip.i2c_write(bytes([0x20, 0x47]), 0.0)  # 50 Hz, XYZ
    chip.i2c_write(bytes([0x23, 0x88]), 0.0)  # BDU, HR, +-2 g
    raw = _read(chip, 0x28 | 0x80, 6, 0.1)
    values = [int.from_bytes(raw[i:i + 2], "little", signed=True) >> 4 for i in (0, 2, 4)]
    assert values == [500, -250, 1000]  # 1 mg/digit, 12-bit left-justified
    assert int.from_bytes(raw[0:2], "little", signed=True) & 0xF == 0
    # Without bit 7 of the sub-address the burst repeats one register.
    assert _read(chip, 0x28, 3, 0.1) == bytes([raw[0]] * 3)


def test_lis3dh_normal_mode_full_scale_and_saturation():
    chip, _, _ = _lis((3.0, 0.0, -3.0))
    chip.i2c_write(bytes([0x20, 0x57]), 0.0)  # 100 Hz
    chip.i2c_write(bytes([0x23, 0x00]), 0.0)  # normal 10-bit, +-2 g: 4 mg/digit, saturates
    raw = _read(chip, 0xA8, 6, 0.05)
    x = int.from_bytes(raw[0:2], "little", signed=True) >> 6
    z = int.from_bytes(raw[4:6], "little", signed=True) >> 6
    assert (x, z) == (511, -512)
    chip.i2c_write(bytes([0x23, 0x10]), 0.06)  # +-4 g: 8 mg/digit
    raw = _read(chip, 0xA8, 2, 0.2)
    assert int.from_bytes(raw, "little", signed=True) >> 6 == 375


def test_lis3dh_data_rate_and_status():
    chip, state, _ = _lis()
    chip.i2c_write(bytes([0x20, 0x27]), 10.0)  # 10 Hz
    assert _read(chip, 0x27, 1, 10.05)[0] & 0x08 == 0x08  # first sample at t0 is fresh
    _read(chip, 0xA8, 6, 10.05)
    assert _read(chip, 0x27, 1, 10.09)[0] & 0x08 == 0  # nothing new within the 100 ms period
    state["a"] = (0.0, 0.0, 0.5)
    assert _read(chip, 0xAC, 2, 10.099) != _read(chip, 0xAC, 2, 10.101)  # new sample at 100 ms
    assert _read(chip, 0x27, 1, 10.35)[0] & 0x88 == 0x88  # several samples missed: overrun


def test_lis3dh_activity_interrupt_latches_until_src_read():
    chip, state, edges = _lis()
    for reg, value in ((0x20, 0x47), (0x23, 0x88), (0x21, 0x01), (0x32, 10), (0x33, 1)):
        chip.i2c_write(bytes([reg, value]), 0.0)
    _read(chip, 0x26, 1, 0.0)  # REFERENCE resets the high-pass filter
    chip.i2c_write(bytes([0x24, 0x08]), 0.0)  # LIR_INT1
    chip.i2c_write(bytes([0x30, 0x2A]), 0.0)  # X/Y/Z high events, OR
    chip.i2c_write(bytes([0x22, 0x40]), 0.0)  # IA1 on INT1
    chip.tick(1.0)
    assert chip.int1_level() == 0 and edges == [0]  # gravity alone is filtered out
    state["a"] = (0.4, 0.0, 1.0)  # a knock of 400 mg > 160 mg threshold
    chip.tick(1.1)
    assert chip.int1_level() == 1 and edges[-1] == 1
    state["a"] = (0.0, 0.0, 1.0)
    chip.tick(2.0)
    assert chip.int1_level() == 1  # latched
    src = _read(chip, 0x31, 1, 2.0)[0]
    assert src & 0x40 and src & 0x02  # IA and XH
    assert chip.int1_level() == 0 and edges[-1] == 0


# --- A02YYUW ------------------------------------------------------------------------------------------
def _sensor(**values):
    world = World(values)
    uart = Uart()
    uart.init(9600)
    return A02YYUW(world, uart, random.Random(5)), uart


def _frames(data: bytes):
    return [data[i:i + 4] for i in range(0, len(data) - 3, 4)]


def test_a02yyuw_frame_format():
    assert frame(2500) == bytes([0xFF, 0x09, 0xC4, (0xFF + 0x09 + 0xC4) & 0xFF])


def test_a02yyuw_stream_rate_and_distance():
    sensor, uart = _sensor(mount_height_cm=250.0, level_cm=35.0, ripple_cm=0.0)
    sensor.advance(100.0 + 4 * BYTE_S)
    uart.take(256)
    sensor.advance(102.0 + 4 * BYTE_S)
    frames = _frames(uart.take(256))
    assert len(frames) == 20  # one frame per 100 ms
    assert all(f[0] == 0xFF and (f[0] + f[1] + f[2]) & 0xFF == f[3] for f in frames)
    assert {(f[1] << 8) | f[2] for f in frames} == {2150}


def test_a02yyuw_bytes_arrive_at_9600_baud():
    sensor, uart = _sensor()
    sensor.advance(50.0 + 4.5 * BYTE_S)
    uart.take(256)
    sensor.advance(50.1 + 1.5 * BYTE_S)  # the frame at 50.1 s is one byte in
    assert len(uart.fifo) == 1
    sensor.advance(50.1 + 4.5 * BYTE_S)
    assert len(uart.fifo) == 4


def test_a02yyuw_blind_zone_corruption_and_missing():
    sensor, uart = _sensor(mount_height_cm=250.0, level_cm=248.0, ripple_cm=0.0)
    sensor.advance(1.0)
    sensor.advance(3.0)
    assert all(((f[1] << 8) | f[2]) < 30 for f in _frames(uart.take(256)))
    sensor, uart = _sensor(level_corrupt_rate=1.0)
    sensor.advance(1.0)
    sensor.advance(3.0)
    data = uart.take(256)
    good = [f for f in _frames(data) if f[0] == 0xFF and (f[0] + f[1] + f[2]) & 0xFF == f[3]]
    assert len(data) > 0 and len(good) < 3 and sensor.corrupted >= 19
    sensor, uart = _sensor(a02yyuw="missing")
    sensor.advance(1.0)
    sensor.advance(3.0)
    assert uart.fifo == b""


def test_uart_fifo_overflow_loses_new_bytes():
    sensor, uart = _sensor()
    sensor.advance(0.0)
    sensor.advance(7.95)  # 80 frames = 320 bytes into a 256-byte FIFO
    assert len(uart.fifo) == 256 and uart.overflow == 320 - 256


# --- HX711 --------------------------------------------------------------------------------------------
def _hx(value=123456):
    inputs = {"A": value, "B": -5}
    return HX711(lambda channel, gain, t: inputs[channel] * (gain / 128 if channel == "A" else 1))


def _read_hx(chip, t_us, pulses=25, high_us=5):
    value = 0
    for i in range(pulses):
        chip.clock(1, t_us)
        chip.clock(0, t_us + high_us)
        t_us += 10
        if i < 24:
            value = (value << 1) | chip.dout(t_us / 1e6)
    return value - (1 << 24) if value & 0x800000 else value, t_us


def test_hx711_protocol_value_and_dout():
    chip = _hx()
    t = 10_050_000  # mid-way between two conversions (every 100 ms)
    assert chip.dout(t / 1e6) == 0  # a conversion is ready
    value, t = _read_hx(chip, t)
    assert value == 123456
    assert chip.dout(t / 1e6) == 1  # high after the 25th pulse until the next conversion
    assert chip.dout(10.2) == 0


def test_hx711_gain_pulses_select_next_conversion():
    chip = _hx(-1000)
    _, t = _read_hx(chip, 10_050_000, pulses=26)  # -> channel B gain 32 next
    value, t = _read_hx(chip, 10_150_000, pulses=27)  # -> channel A gain 64 next
    assert value == -5
    value, _ = _read_hx(chip, 10_250_000)
    assert value == -500
    assert _hx(10**8) and _read_hx(_hx(10**8), 10_050_000)[0] == 0x7FFFFF  # saturates


def test_hx711_clock_held_high_powers_down():
    chip = _hx()
    chip.clock(1, 20_000_000)
    assert chip.dout(20.000_030) == 0  # 30 us high: still on
    assert chip.dout(20.000_100) == 1  # > 60 us: powered down, DOUT high
    chip.clock(0, 20_000_200)
    assert chip.power_downs == 1
    assert chip.dout(20.3) == 1  # settling after power-up: 400 ms at 10 SPS
    assert chip.dout(20.45) == 0
    # A stretched pulse in the middle of a read resets the chip as well.
    chip2 = _hx()
    chip2.clock(1, 30_000_000)
    chip2.clock(0, 30_000_100)
    assert chip2.power_downs == 1 and chip2.dout(30.1) == 1


# --- anemometer ---------------------------------------------------------------------------------------
def test_anemometer_pulse_rate_follows_wind():
    wind = 20.0
    anemo = Anemometer(lambda t: wind / 0.667)
    edges = []
    anemo.advance(100.0)
    anemo.advance(110.0, edges)
    falling = [t for t, level in edges if level == 0]
    assert abs(len(falling) - 300) <= 1  # 20 m/s / 0.667 = 30 Hz
    gaps = [b - a for a, b in zip(falling, falling[1:], strict=False)]
    assert max(gaps) - min(gaps) < 1e-6 and abs(gaps[0] - 0.667 / 20) < 1e-6
    assert Anemometer(lambda t: 30.0, lambda t: False).level(5.0) == 1  # broken: no pulses, pulled up


# --- world, scenarios ---------------------------------------------------------------------------------
def test_world_parses_and_rejects():
    assert parse("tilt_deg", "12") == 12.0
    with pytest.raises(ValueError, match="unknown quantity 'tilt'"):
        parse("tilt", "1")
    with pytest.raises(ValueError, match="out of range"):
        parse("battery_v", "9")
    with pytest.raises(ValueError, match="needs a number"):
        parse("level_cm", "high")
    with pytest.raises(ValueError, match="lis3dh must be one of"):
        parse("lis3dh", "broken")
    world = World({"wind_mps": 20.0, "area_m2": 6.0})
    assert world.load(0.0) == pytest.approx(0.5 * 1.225 * 1.2 * 6 * 400)
    world.set({"load_n": "1500"})
    assert world.load(0.0) == 1500.0


def test_scenario_interpolates_fires_events_and_validates(tmp_path):
    fired = []
    sc = Scenario({"series": {"level_cm": [[0, 0], [10, 20]]}, "events": [{"t": 5, "net": "down"}]})
    player = Player(sc, speed=10.0, fire=fired.append, start=100.0)
    assert player.value("level_cm", 100.5) == pytest.approx(10.0)  # 5 scenario s at 10x
    assert player.value("level_cm", 200.0) == 20.0  # held after the end
    player.tick(100.4)
    assert fired == []
    player.tick(100.6)
    assert fired[0]["kind"] == "net" and fired[0]["arg"] == "down"
    assert player.status(102.0)["finished"]
    bad = tmp_path / "bad.json"
    for text, message in (("{", "not valid JSON"), ('{"series": {"nope": [[0, 1]]}}', "unknown quantity"),
                          ('{"series": {"level_cm": [[5, 1], [1, 2]]}}', "must not go backwards"),
                          ('{"events": [{"t": 1, "net": "sideways"}]}', "net is"), ('{"x": 1}', "unknown keys")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            Scenario.load(bad)


def test_shipped_scenarios_load():
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "tools" / "boardemu" / "scenarios"
    names = {Scenario.load(p).name for p in folder.glob("*.json")}
    assert names >= {"typhoon", "rainstorm", "manhole-lift", "quiet-day"}
    typhoon = Scenario.load(folder / "typhoon.json")
    assert max(typhoon.series["wind_mps"][1]) == 40
    rain = Scenario.load(folder / "rainstorm.json")
    assert max(rain.series["level_cm"][1]) > 27


# --- Hardware -----------------------------------------------------------------------------------------
def test_hardware_set_persists_and_reports(tmp_path):
    hw = Hardware("water-level", tmp_path, seed=1)
    try:
        hw.set({"level_cm": "35", "battery_v": "3.6"})
        with pytest.raises(ValueError):
            hw.set({"level_cm": "lots"})
        assert hw.status()["physical"]["level_cm"] == 35.0
        saved = json.loads((tmp_path / "hardware.json").read_text())
        assert saved["settings"]["battery_v"] == 3.6
    finally:
        hw.close()
    again = Hardware("water-level", tmp_path)
    assert again.status()["physical"]["level_cm"] == 35.0 and again.seed == 1
    with pytest.raises(ValueError, match="unknown board kind"):
        Hardware("toaster", tmp_path)


def test_watchdog_not_fed_requests_wdt_reset(tmp_path):
    hw = Hardware("manhole-tilt", tmp_path)
    hw.start()
    try:
        hw.vm_starting("power_on")
        with hw.lock:
            hw.wdt.start(150, time.monotonic())
        hw.wake()
        assert _until(lambda: hw.lifecycle.calls == [("reset", "wdt")])
        assert hw.status()["watchdog"]["armed"] is False
    finally:
        hw.close()


# --- gateway ------------------------------------------------------------------------------------------
@pytest.fixture
def echo_server():
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(100), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


def _via(gw, port, timeout=2.0):
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    s.sendall(b"127.0.0.1 %d\n" % port)
    return s, s.makefile("rb").readline()


def test_gateway_relays_refuses_and_cuts(echo_server):
    gw = Gateway(threading.Event())
    try:
        s, answer = _via(gw, echo_server)
        assert answer == b"OK\n"
        s.sendall(b"ping")
        assert s.recv(10) == b"ping"
        with pytest.raises(ValueError, match="not a loopback"):
            loopback_target(b"192.0.2.1 1883")
        gw.set_up(False)
        s.sendall(b"lost")
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(10)  # the old connection went silent: no data, no FIN
        with pytest.raises(socket.timeout):
            _via(gw, echo_server, timeout=0.3)  # no answer to a new connect
        gw.set_up(True)
        s2, answer = _via(gw, echo_server)
        assert answer == b"OK\n"
        s2.sendall(b"back")
        assert s2.recv(10) == b"back"
        with pytest.raises(socket.timeout):
            s.recv(10)  # the cut connection stays dead
    finally:
        gw.close()
