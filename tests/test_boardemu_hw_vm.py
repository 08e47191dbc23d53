"""The emulator's `machine`/`network` inside the real MicroPython VM, against a Hardware in this process.

Each test starts a Hardware (hub, gateway, scheduler), runs a small script under the VM with
tools/boardemu/vm first on MICROPYPATH (as the emulator does) and the repo root after it (so the
agent's real drivers run), and checks what the script saw against the physics that was set.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tests.mpvm import REPO, run_micropython
from tools.boardemu.hardware import Hardware

pytestmark = pytest.mark.micropython
VM_DIR = REPO / "tools" / "boardemu" / "vm"


@pytest.fixture
def board(tmp_path):
    made = []

    def make(kind, cause="power_on", **values):
        hw = Hardware(kind, tmp_path / kind, seed=7)
        env = hw.start()
        env.update(BOARDEMU_RESET_CAUSE=cause, BOARDEMU_UID="24dcc3a01122")
        hw.vm_starting(cause)
        hw.set({k: str(v) for k, v in values.items()})
        made.append(hw)
        return hw, env

    yield make
    for hw in made:
        hw.close()


def run(env, code, timeout=60):
    result = run_micropython(code, path=[VM_DIR, REPO], heap="110k", env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_machine_is_ours_and_system_functions(board):
    hw, env = board("manhole-tilt", cause="wdt", battery_v=3.6)
    out = run(env, """
import machine, gc
print("file=" + machine.__file__)
print("cause=%d" % machine.reset_cause())
print("uid=" + machine.unique_id().hex())
print("bat_mv=%d" % (machine.ADC(machine.Pin(35), atten=machine.ADC.ATTN_11DB).read_uv() * 2 // 1000))
print("clipped_mv=%d" % (machine.ADC(machine.Pin(35)).read_uv() // 1000))
rtc = machine.RTC()
rtc.datetime((2031, 5, 6, 0, 7, 8, 9, 0))
print("rtc=%r" % (rtc.datetime()[:6],))
gc.collect()
print("free=%d" % gc.mem_free())
""")
    assert out["file"].endswith("tools/boardemu/vm/machine.py")
    assert out["cause"] == "3"  # machine.WDT_RESET on the ESP32 port
    assert out["uid"] == "24dcc3a01122"
    assert abs(int(out["bat_mv"]) - 3600) < 40  # 2:1 divider, 11 dB
    assert out["clipped_mv"] == "950"  # 0 dB: the ADC's usable range ends at 950 mV
    assert out["rtc"] == "(2031, 5, 6, 1, 7, 8)"  # the RTC computes the weekday: a Tuesday
    assert int(out["free"]) > 60000


def test_lis3dh_read_by_the_agent_driver_and_int1_wakes_asyncio(board):
    hw, env = board("manhole-tilt", tilt_deg=90, azimuth_deg=0, accel_noise_mg=0)
    # Once the script says it is armed, a knock (vibration) must wake it through the IRQ pump.
    timer = threading.Timer(1.0, lambda: hw.set({"vibration_g": "0.8"}))
    timer.start()
    try:
        out = run(env, """
import asyncio, machine, time
from agent.lis3dh import LIS3DH
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
acc = LIS3DH(i2c, rate_hz=50)
acc.setup()
time.sleep_ms(40)
print("raw=%d,%d,%d" % tuple(acc.read_raw()))
flag = asyncio.ThreadSafeFlag()
got = []
def on_int(pin):
    got.append(time.ticks_ms())
    flag.set()
pin = machine.Pin(34, machine.Pin.IN)
pin.irq(trigger=machine.Pin.IRQ_RISING, handler=on_int)
acc.enable_activity_int(threshold_mg=300, duration_samples=1)
async def main():
    asyncio.create_task(machine.irq_pump())
    await asyncio.wait_for_ms(flag.wait(), 6000)
asyncio.run(main())
print("irqs=%d" % len(got))
print("latched=%d" % acc.clear_int())
""")
    finally:
        timer.cancel()
    x, y, z = (int(v) for v in out["raw"].split(","))
    assert abs(x - 1000) < 10 and abs(y) < 10 and abs(z) < 10  # tilted 90 deg towards +X
    assert int(out["irqs"]) >= 1
    assert out["latched"] == "1"


def test_a02yyuw_frames_read_by_the_agent_driver(board):
    hw, env = board("water-level", level_cm=35, mount_height_cm=250, ripple_cm=0)
    out = run(env, """
import machine, time
from agent.a02yyuw import A02YYUW
uart = machine.UART(2, 9600, rx=16, tx=17)
sensor = A02YYUW(uart)
time.sleep_ms(1050)
t = time.ticks_ms()
print("waiting=%d" % uart.any())
print("mm=%r" % sensor.poll(t))
print("frames=%d" % sensor.frames)
""")
    assert out["mm"] == "2150"
    assert 9 <= int(out["frames"]) <= 11  # one frame per 100 ms
    assert 36 <= int(out["waiting"]) <= 44


def test_hx711_and_anemometer_read_by_the_agent_drivers(board):
    hw, env = board("wind-load", wind_mps=20, gust_mps=0, load_n=1000, hx711_offset=120000, hx711_scale=50,
                    hx711_noise=0)
    out = run(env, """
import asyncio, machine
from machine import Pin
from agent.hx711 import HX711
from agent.anemometer import Anemometer
from agent.calibrate import average
cell = HX711(Pin(25, Pin.OUT, value=0), Pin(26, Pin.IN), disable_irq=machine.disable_irq,
             enable_irq=machine.enable_irq)
cell.setup()
print("counts=%d" % average(cell, 5))
print("worst_high_us=%d" % cell.worst_high_us)
anemo = Anemometer(Pin(27, Pin.IN, Pin.PULL_UP))
anemo.setup()
async def main():
    asyncio.create_task(machine.irq_pump())
    await asyncio.sleep(2)
asyncio.run(main())
print("pulses=%d" % anemo.count)
""")
    assert float(out["counts"]) == 170000  # offset + 1000 N * 50 counts/N
    assert 55 <= int(out["pulses"]) <= 65  # 20 m/s / 0.667 = 30 Hz for 2 s
    assert hw.status()["chips"]["hx711"]["reads"] >= 5


def test_watchdog_and_reset_requests_reach_the_lifecycle(board):
    hw, env = board("wind-load")
    run(env, """
import machine, time
wdt = machine.WDT(timeout=300)
for _ in range(5):
    time.sleep_ms(100)
    wdt.feed()
time.sleep_ms(700)
""")
    assert hw.lifecycle.calls == [("reset", "wdt")]
    hw.vm_starting("wdt")
    result = run_micropython("import machine\nmachine.deepsleep(1500)", path=[VM_DIR], env=env, timeout=30)
    assert result.returncode != 0  # nobody killed it: it gave up waiting
    assert hw.lifecycle.calls[-1] == ("deepsleep", 1500)


def test_network_gateway_and_link_cut(board):
    hw, env = board("water-level")
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo():
        conn, _ = srv.accept()
        for data in iter(lambda: conn.recv(100), b""):
            conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    code = Path(REPO / "firmware" / "boards" / "emulator" / "board.py").read_text() + """
import asyncio
b = Board()
print("up=%r" % b.network_up(1000), "rssi=%r" % b.link_quality())
async def main():
    r, w = await b.open_connection("127.0.0.1", PORT)
    w.write(b"hello")
    await w.drain()
    print("echo=" + (await r.read(5)).decode())
    try:
        await b.open_connection("192.0.2.1", 80)
    except OSError as e:
        print("remote=refused")
asyncio.run(main())
""".replace("PORT", str(port))
    out = run(env, code)
    srv.close()
    assert out["up"].startswith("True") and out["echo"] == "hello" and out["remote"] == "refused"
    hw.net(False)
    out = run(env, """
import asyncio, network
async def main():
    try:
        await network.open_connection("127.0.0.1", %d, 500)
    except OSError as e:
        print("err=%%d" %% e.args[0])
print("up=%%r" %% (network.link_state()[0],))
asyncio.run(main())
""" % port)
    assert out == {"up": "False", "err": "110"}  # the connect timed out, as over a lost link
