"""The emulated hardware (issue 3) proved from outside: small MicroPython scripts sent over a started
board's serial port (raw REPL) read its chips, and the `boardemu` CLI sets the physics, resets the
board, cuts the link and plays scenarios.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from hil_tests.conftest import SerialRepl

pytestmark = pytest.mark.hil

PWRON_RESET, HARD_RESET, WDT_RESET = 1, 2, 3  # machine.*_RESET on the ESP32 port


def on_board(board, code: str, timeout: float = 20.0) -> dict[str, str]:
    """Run `code` on the board from the raw REPL; its `name=value` output lines as a dict."""
    with SerialRepl(board.port) as repl:
        repl.enter_raw()
        out, err = repl.exec_raw(code, timeout)
    assert err == b"", err.decode(errors="replace")
    text = out.decode().replace("\r\n", "\n")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def cli_ok(boardemu_cli, *words) -> str:
    """`boardemu WORDS...`, which must succeed; its stdout."""
    result = boardemu_cli(*[str(w) for w in words])
    assert result.code == 0, result.stderr
    return result.stdout


def status(boardemu_cli, board) -> dict:
    """`boardemu status --json` of the board."""
    return json.loads(cli_ok(boardemu_cli, "status", "--dir", board.dir, "--json"))


def wait_for(condition, timeout: float = 15.0, what: str = "condition"):
    """Poll `condition()` until it returns something truthy (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.0f s" % (what, timeout))
        time.sleep(0.05)


def test_reset_causes_power_on_then_hard_counted_in_status(emulated_board, boardemu_cli):
    cause = "import machine\nprint('cause=%d' % machine.reset_cause())"
    assert on_board(emulated_board, cause)["cause"] == str(PWRON_RESET)
    before = status(boardemu_cli, emulated_board)
    assert before["last_reset_cause"] == "power_on"
    cli_ok(boardemu_cli, "reset", "--dir", emulated_board.dir)
    assert on_board(emulated_board, cause)["cause"] == str(HARD_RESET)
    after = status(boardemu_cli, emulated_board)
    assert after["reset_count"] == before["reset_count"] + 1
    assert after["last_reset_cause"] == "hard"
    assert after["reset_causes"] == {"power_on": 1, "hard": 1}


def test_unfed_watchdog_restarts_the_board_with_wdt_cause(emulated_board, boardemu_cli):
    # Fed for 1.5 s (longer than its timeout) the board lives; then the script ends and nobody feeds it.
    out = on_board(emulated_board, """
import machine, time
wdt = machine.WDT(timeout=1000)
for _ in range(6):
    time.sleep_ms(250)
    wdt.feed()
print('fed=1')
""")
    assert out == {"fed": "1"}
    assert status(boardemu_cli, emulated_board)["reset_count"] == 0  # feeding kept it alive
    after = wait_for(lambda: (lambda s: s if s["reset_count"] >= 1 else None)(status(boardemu_cli, emulated_board)),
                     timeout=10, what="a watchdog reset")
    assert after["last_reset_cause"] == "wdt"
    assert after["hardware"]["watchdog"]["fired"] == 1
    emulated_board.wait_up()
    out = on_board(emulated_board, "import machine\nprint('cause=%d' % machine.reset_cause())")
    assert out["cause"] == str(WDT_RESET)


LIS3DH_READ = """
import machine, struct, time
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=400000)
print('scan=%r' % (i2c.scan(),))
print('who=%d' % i2c.readfrom_mem(0x18, 0x0F, 1)[0])
i2c.writeto_mem(0x18, 0x20, b'\\x57')  # CTRL_REG1: 100 Hz, X/Y/Z on
i2c.writeto_mem(0x18, 0x23, b'\\x88')  # CTRL_REG4: BDU, high resolution, +-2 g (1 mg/digit)
print('ctrl=%r' % (tuple(i2c.readfrom_mem(0x18, 0x20 | 0x80, 4)),))
t = time.ticks_ms()
while not i2c.readfrom_mem(0x18, 0x27, 1)[0] & 0x08:  # STATUS_REG ZYXDA
    assert time.ticks_diff(time.ticks_ms(), t) < 2000
x, y, z = struct.unpack('<hhh', i2c.readfrom_mem(0x18, 0x28 | 0x80, 6))  # auto-increment over OUT_X_L..OUT_Z_H
print('mg=%d,%d,%d' % (x >> 4, y >> 4, z >> 4))
"""


def _mg(out) -> tuple[int, ...]:
    return tuple(int(v) for v in out["mg"].split(","))


def test_lis3dh_register_map_and_tilt(emulated_board, boardemu_cli):
    cli_ok(boardemu_cli, "set", "--dir", emulated_board.dir, "tilt_deg=0", "azimuth_deg=0", "vibration_g=0")
    out = on_board(emulated_board, LIS3DH_READ)
    assert 0x18 in eval(out["scan"])  # noqa: S307 - a list of ints the board printed
    assert out["who"] == "51"  # WHO_AM_I 0x33
    assert out["ctrl"] == "(87, 0, 0, 136)"  # CTRL_REG1..4 as written, read with auto-increment
    x, y, z = _mg(out)
    assert abs(x) < 60 and abs(y) < 60 and abs(z - 1000) < 60  # level: gravity on Z
    cli_ok(boardemu_cli, "set", "--dir", emulated_board.dir, "tilt_deg=90")
    x, y, z = _mg(on_board(emulated_board, LIS3DH_READ))
    assert abs(x - 1000) < 60 and abs(y) < 60 and abs(z) < 60  # tipped 90 deg towards +X: gravity on X


A02YYUW_READ = """
import machine, time
uart = machine.UART(2, baudrate=9600, bits=8, parity=None, stop=1, rx=16, tx=17)
time.sleep_ms(150)
uart.read()
buf = b''
t = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t) < 1000:
    time.sleep_ms(20)
    buf += uart.read() or b''
good, bad, mm, i = 0, 0, [], 0
while i + 4 <= len(buf):
    if buf[i] != 0xFF:
        i += 1
        continue
    if (buf[i] + buf[i + 1] + buf[i + 2]) & 0xFF == buf[i + 3]:
        good += 1
        mm.append(buf[i + 1] << 8 | buf[i + 2])
        i += 4
    else:
        bad += 1
        i += 1
print('frames=%d' % good)
print('bad=%d' % bad)
print('mm=%r' % (sorted(set(mm)),))
"""


def test_a02yyuw_frames_at_their_rate_follow_the_water_level(board_factory, boardemu_cli):
    board = board_factory("water-level")
    cli_ok(boardemu_cli, "set", "--dir", board.dir, "level_cm=35", "mount_height_cm=250", "ripple_cm=0",
           "level_spurious_rate=0", "level_corrupt_rate=0")
    out = on_board(board, A02YYUW_READ)
    assert 9 <= int(out["frames"]) <= 11  # one frame per 100 ms (a partial one at either end)
    assert out["bad"] == "0"  # every checksum valid
    assert out["mm"] == "[2150]"  # 250 cm mount - 35 cm water
    cli_ok(boardemu_cli, "set", "--dir", board.dir, "level_cm=100", "mount_height_cm=300")
    assert on_board(board, A02YYUW_READ)["mm"] == "[2000]"


WIND_LOAD_READ = """
import asyncio, machine, time
from machine import Pin
reed = Pin(27, Pin.IN, Pin.PULL_UP)
pulses = [0]
def count(pin):
    pulses[0] += 1
reed.irq(handler=count, trigger=Pin.IRQ_FALLING)
async def main():
    asyncio.create_task(machine.irq_pump())
    await asyncio.sleep_ms(1000)
asyncio.run(main())
reed.irq(handler=None)
print('pulses=%d' % pulses[0])
clk, dout = Pin(25, Pin.OUT, value=0), Pin(26, Pin.IN)
def hx_read():
    t = time.ticks_ms()
    while dout.value():  # DOUT low: a conversion is ready
        assert time.ticks_diff(time.ticks_ms(), t) < 2000
    word = 0
    state = machine.disable_irq()
    for _ in range(24):
        clk.on()
        clk.off()
        word = word << 1 | dout.value()
    clk.on()  # 25th pulse: channel A, gain 128 next
    clk.off()
    machine.enable_irq(state)
    return word - (1 << 24) if word & 0x800000 else word
print('counts=%d' % hx_read())
print('again=%d' % hx_read())
"""


def _power_downs(board) -> int:
    return board.status()["hardware"]["chips"]["hx711"]["power_downs"]


def read_wind_and_load(board) -> dict[str, str]:
    """WIND_LOAD_READ on the board, again (3 tries at most) while a read powered the HX711 down: the host
    descheduled the VM with the clock high past the datasheet's 60 us, which no board with its interrupts
    off sees. The words of a read that did not power it down must be exact."""
    for _ in range(3):
        before = _power_downs(board)
        out = on_board(board, WIND_LOAD_READ)
        if _power_downs(board) == before:
            return out
    raise AssertionError("every read of the HX711 powered it down (a host too loaded for 60 us)")


def test_anemometer_pulses_and_hx711_follow_wind_and_load(board_factory, boardemu_cli):
    board = board_factory("wind-load")
    common = ("gust_mps=0", "hx711_offset=120000", "hx711_scale=50", "hx711_noise=0")
    cli_ok(boardemu_cli, "set", "--dir", board.dir, "wind_mps=20", "load_n=1000", *common)
    fast = read_wind_and_load(board)
    cli_ok(boardemu_cli, "set", "--dir", board.dir, "wind_mps=10", "load_n=-500", *common)
    slow = read_wind_and_load(board)
    assert 26 <= int(fast["pulses"]) <= 34  # 20 m/s / 0.667 m/s per Hz = 30 Hz for 1 s
    assert 12 <= int(slow["pulses"]) <= 18  # half the wind, half the rate
    assert fast["counts"] == fast["again"] == "170000"  # offset + 1000 N * 50 counts/N, 24-bit word
    assert slow["counts"] == "95000"  # a negative load: offset - 500 N * 50 counts/N


BATTERY_READ = """
import machine
adc = machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB)
print('mv=%d' % (adc.read_uv() * 2 // 1000))  # 2:1 divider
"""


def test_battery_adc_follows_battery_v(emulated_board, boardemu_cli):
    cli_ok(boardemu_cli, "set", "--dir", emulated_board.dir, "battery_v=3.9")
    assert abs(int(on_board(emulated_board, BATTERY_READ)["mv"]) - 3900) < 50
    cli_ok(boardemu_cli, "set", "--dir", emulated_board.dir, "battery_v=3.3")
    assert abs(int(on_board(emulated_board, BATTERY_READ)["mv"]) - 3300) < 50


@pytest.fixture
def echo_server():
    """A loopback TCP echo server; its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve(conn):
        with conn:
            for data in iter(lambda: conn.recv(256), b""):
                conn.sendall(data)

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


def test_network_link_cut_silences_and_restore_reconnects(emulated_board, boardemu_cli, echo_server):
    # One raw-REPL session: globals (the open socket) survive between the scripts.
    connect = """
try:
    s = network.connect('127.0.0.1', %d, 1000)
    s.write(b'ping')
    print('echo=' + s.read(4).decode())
except OSError as e:
    print('connect_err=%%d' %% e.args[0])
""" % echo_server
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        assert repl.exec_raw("import network, socket\n" + connect)[0] == b"echo=ping\r\n"
        cli_ok(boardemu_cli, "net", "--dir", emulated_board.dir, "down")
        out, err = repl.exec_raw("""
old = s
old.settimeout(0.5)
old.write(b'lost')
try:
    print('late=%r' % old.recv(4))
except OSError:
    print('silent=1')
""" + connect)
        assert err == b""
        assert out == b"silent=1\r\nconnect_err=110\r\n"  # no reply, no RST; a new connect times out
        cli_ok(boardemu_cli, "net", "--dir", emulated_board.dir, "up")
        assert repl.exec_raw(connect)[0] == b"echo=ping\r\n"


def test_playing_a_scenario_changes_the_physics_over_time(board_factory, boardemu_cli):
    board = board_factory("wind-load")
    cli_ok(boardemu_cli, "play", "--dir", board.dir, "typhoon", "--speed", "600")  # 30 min in 3 s

    def physical():
        return status(boardemu_cli, board)["hardware"]

    first = physical()
    assert first["scenario"]["name"] == "typhoon"
    assert first["physical"]["wind_mps"] < 15  # a breeze at the start
    peak = wait_for(lambda: (lambda h: h if h["physical"]["wind_mps"] >= 30 else None)(physical()),
                    timeout=10, what="the typhoon's peak")
    assert peak["scenario"]["t_s"] > first["scenario"]["t_s"]
    done = wait_for(lambda: (lambda h: h if h["scenario"]["finished"] else None)(physical()),
                    timeout=10, what="the end of the typhoon")
    assert done["physical"]["wind_mps"] == 5  # held at its last value
    assert done["net"]["up"] is True  # the link the typhoon cut at its peak came back
