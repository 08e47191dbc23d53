"""`Hardware`: the emulated peripherals of one board, driven by a small physical world.

E1's host makes one per board (see EMULATOR_CONTRACT.md): `hw = Hardware(kind, state_dir, lifecycle)`,
`env = hw.start()` (variables for every VM start), then `vm_starting(cause)` / `vm_stopped()` around
each VM run, and `set`, `play`, `net`, `status`, `close` from any thread. It runs three daemon
threads: the hub server for the VM's `machine` module, the network gateway, and a scheduler that
wakes when something is due (a LIS3DH sample while its interrupt is armed, an anemometer edge while
its pin IRQ is armed, the watchdog, the next scenario event) and otherwise sleeps for up to 1 s.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from pathlib import Path

from tools.boardemu.hardware import adc
from tools.boardemu.hardware.a02yyuw import A02YYUW, Uart
from tools.boardemu.hardware.anemometer import Anemometer
from tools.boardemu.hardware.busops import BusOps
from tools.boardemu.hardware.chips import FaultableI2C
from tools.boardemu.hardware.gateway import Gateway
from tools.boardemu.hardware.hub import HubServer
from tools.boardemu.hardware.hx711 import HX711
from tools.boardemu.hardware.lis3dh import LIS3DH
from tools.boardemu.hardware.motion import CoverMotion
from tools.boardemu.hardware.physics import World
from tools.boardemu.hardware.pins import Pins
from tools.boardemu.hardware.rtc import Rtc
from tools.boardemu.hardware.scenario import Player, Scenario
from tools.boardemu.hardware.watchdog import Watchdog

KINDS = ("manhole-tilt", "water-level", "wind-load")
SETTINGS_FILE = "hardware.json"
# The contract's ESP32 pin map.
PIN_ACCEL_INT, PIN_REED, PIN_HX_DOUT, PIN_HX_SCK = 34, 27, 26, 25


class _NoLifecycle:
    """Stands in when no host is attached (unit tests): records what would have happened."""

    def __init__(self):
        self.calls = []

    def request_reset(self, cause):
        self.calls.append(("reset", cause))

    def request_deepsleep(self, ms):
        self.calls.append(("deepsleep", ms))


class Hardware:
    """Everything around the MCU of one board of `kind`; settings persist in `state_dir`."""

    def __init__(self, kind: str, state_dir, lifecycle=None, seed: int | None = None):
        if kind not in KINDS:
            raise ValueError("unknown board kind %r; choose one of %s" % (kind, ", ".join(KINDS)))
        self.kind = kind
        self.state_dir = Path(state_dir)
        self.lifecycle = lifecycle or _NoLifecycle()
        saved = self._load()
        self.seed = saved.get("seed", random.randrange(1 << 30)) if seed is None else seed
        self.rng = random.Random(self.seed)
        self.world = World(saved.get("settings"), seed=self.seed)
        self.lock = threading.RLock()
        self._wake = threading.Event()
        self._events: list = []
        self._vm_gone = threading.Event()
        self._player = None
        self._closed = False
        self.boots: list = []
        now = time.monotonic()
        self.pins = Pins(self._queue_event)
        self.wdt = Watchdog()
        self.rtc = Rtc(now)
        self.motion = self.lis = self.uart2 = self.level = self.anemometer = self.hx = None
        self._i2c: dict = {}
        getattr(self, "_build_" + kind.replace("-", "_"))()
        self.ops = BusOps(self)
        self.hub = None
        self.gateway = None

    # --- models per kind --------------------------------------------------------------------------
    def _build_manhole_tilt(self) -> None:
        self.motion = CoverMotion(self.world, self.rng)
        self.lis = LIS3DH(self.motion.accel, lambda level, t: self.pins.input_edge(PIN_ACCEL_INT, level))
        self.pins.attach_input(PIN_ACCEL_INT, lambda t: self.lis.int1_level())
        self._i2c[0x18] = FaultableI2C(self.lis, "lis3dh", self.world, self.rng)

    def _build_water_level(self) -> None:
        self.uart2 = Uart()
        self.level = A02YYUW(self.world, self.uart2, self.rng)

    def _build_wind_load(self) -> None:
        w = self.world
        self.anemometer = Anemometer(lambda t: w.wind(t) / w.value("anemometer_factor", t),
                                     lambda t: w.value("anemometer", t) == "ok")
        self.pins.attach_input(PIN_REED, self.anemometer.level)
        self.hx = HX711(self._hx_counts)
        self.hx.rng = self.rng
        self.pins.attach_output(PIN_HX_SCK, self.hx.clock)
        self.pins.attach_input(PIN_HX_DOUT, self._hx_dout)

    def _hx_counts(self, channel: str, gain: int, t: float) -> float:
        noise = self.rng.gauss(0, self.world.value("hx711_noise", t))
        if channel == "B":  # channel B is not wired: noise around zero
            return noise * gain / 128
        v = self.world.value
        return (v("hx711_offset", t) + self.world.load(t) * v("hx711_scale", t)) * gain / 128 + noise

    def _hx_dout(self, t: float) -> int:
        self.hx.state = self.world.value("hx711", t)
        return self.hx.dout(t)

    # --- what BusOps asks -------------------------------------------------------------------------
    def i2c_device(self, addr: int):
        dev = self._i2c.get(addr)
        return dev if dev is not None and dev.present(time.monotonic()) else None

    def uart(self, uid: int):
        return self.uart2 if uid == 2 else None

    def advance_uart_peers(self, t: float) -> None:
        if self.level is not None:
            self.level.advance(t)

    def arm_irq(self, pin: int, trigger: int, t: float) -> None:
        """Pin.irq(): edges a model made before the IRQ was armed are not events (no replayed backlog)."""
        if pin == PIN_REED and self.anemometer is not None and not self.pins.armed(pin):
            self.anemometer.advance(t)  # catch the rotor up to now without collecting its edges
        self.pins.irq(pin, trigger)
        self.wake()

    def adc(self, pin: int, atten: int, t: float):
        if pin not in adc.ADC_PINS:
            raise ValueError("GPIO%d has no ADC" % pin)
        volts = self.world.value("battery_v", t) / 2 if pin == adc.BATTERY_PIN else 0.0
        return adc.convert(volts, atten, self.rng)

    def wake(self) -> None:
        """Make the scheduler recompute when it is next due."""
        self._wake.set()

    def _queue_event(self, pin: int, flags: int) -> None:
        self._events.append((pin, flags))
        self._wake.set()

    # --- the contract -----------------------------------------------------------------------------
    def start(self) -> dict:
        """Start the hub, the gateway and the scheduler; returns the env vars every VM start needs."""
        if self.hub is None:
            self.hub = HubServer(self.ops.handle, on_disconnect=self._vm_gone.set)
            self.gateway = Gateway(self._vm_gone)
            threading.Thread(target=self._run, name="boardemu-hw", daemon=True).start()
        return {"BOARDEMU_HW": "1", "BOARDEMU_HUB": "127.0.0.1:%d" % self.hub.port,
                "BOARDEMU_NET": "127.0.0.1:%d" % self.gateway.port}

    def vm_starting(self, reset_cause: str) -> None:
        """Right before a VM (re)start: the MCU's peripherals are reset; chips keep power unless power_on."""
        now = time.monotonic()
        with self.lock:
            self._vm_gone.clear()
            self.pins.reset()
            self.ops.reset()
            self.wdt.disarm()
            if self.uart2 is not None:
                self.uart2.deinit()
            if reset_cause == "power_on":
                self.rtc.power_on(now)
                if self.lis is not None:
                    self.lis.power_on(now)
            self.boots.append(reset_cause)
            del self.boots[:-20]

    def vm_stopped(self) -> None:
        """Right after the VM died or was killed: disarm the WDT, drop its hub link and sockets."""
        self._vm_gone.set()
        with self.lock:
            self.wdt.disarm()
            self.pins.reset()
            self._events.clear()
        if self.hub is not None:
            self.hub.drop()

    def set(self, values: dict) -> dict:
        """Set physical quantities / chip fault switches (str values are parsed); ValueError when bad."""
        if not isinstance(values, dict):
            raise ValueError("set takes NAME=VALUE pairs")
        parsed = self.world.set(values)
        self._save()
        self.wake()
        return parsed

    def play(self, path, speed: float = 1.0) -> None:
        """Play a scenario file in the background (replacing a running one); ValueError when bad."""
        scenario = Scenario.load(path)
        player = Player(scenario, speed, self._fire)
        with self.lock:
            self._player = player
            self.world.drive(player)
        self.wake()

    def stop_scenario(self) -> None:
        """Stop the running scenario; quantities return to their set values."""
        with self.lock:
            self._player = None
            self.world.drive(None)

    def net(self, up: bool) -> None:
        """Cut (False) or restore (True) the board's network link."""
        if self.gateway is None:
            raise ValueError("the hardware is not started")
        self.gateway.set_up(bool(up))

    def status(self) -> dict:
        """Physical values, link, watchdog, scenario progress and counters (JSON-able)."""
        now = time.monotonic()
        with self.lock:
            out = {"kind": self.kind, "physical": self.world.snapshot(now), "watchdog": self.wdt.status(now),
                   "net": self.gateway.status() if self.gateway else {"up": True},
                   "scenario": self._player.status(now) if self._player else None,
                   "vm_connected": bool(self.hub and self.hub.connected), "boots": list(self.boots),
                   "rtc": self.rtc.now(now).isoformat(), "chips": self._chip_status()}
        if self.hub is not None:
            out["hub"] = {"requests": self.hub.requests, "events_sent": self.hub.events_sent,
                          "events_dropped": self.hub.events_dropped, "one_way_errors": self.ops.errors}
        return out

    def _chip_status(self) -> dict:
        chips = {}
        if self.level is not None:
            chips["a02yyuw"] = {"frames": self.level.frames, "corrupted": self.level.corrupted,
                                "spurious": self.level.spurious, "uart_overflow": self.uart2.overflow}
        if self.hx is not None:
            chips["hx711"] = {"reads": self.hx.reads, "power_downs": self.hx.power_downs,
                              "channel": self.hx.channel, "gain": self.hx.gain}
        if self.anemometer is not None:
            chips["anemometer"] = {"pulses": self.anemometer.pulses}
        if self.lis is not None:
            chips["lis3dh"] = {"odr_hz": self.lis.odr(), "int1": self.lis.int1_level()}
        return chips

    def close(self) -> None:
        """Stop every thread and socket."""
        self._closed = True
        self.wake()
        for part in (self.hub, self.gateway):
            if part is not None:
                part.close()

    # --- scenario events, persistence, scheduler -------------------------------------------------
    def _fire(self, event: dict) -> None:
        kind, arg, now = event["kind"], event["arg"], time.monotonic()
        if kind == "set":
            self.world.set(arg, release=False)
        elif kind == "net":
            self.net(arg == "up")
        elif self.motion is not None:
            with self.lock:
                if kind == "impact_g":
                    self.motion.impact(now, arg)
                else:
                    self.motion.freefall(now, arg / 1000.0)

    def _load(self) -> dict:
        try:
            return json.loads((self.state_dir / SETTINGS_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / (SETTINGS_FILE + ".tmp")
        tmp.write_text(json.dumps({"seed": self.seed, "settings": self.world.settings()}, indent=1, sort_keys=True))
        tmp.replace(self.state_dir / SETTINGS_FILE)

    def _run(self) -> None:
        while not self._closed:
            self._wake.clear()  # before the work: a wake() during it makes the wait below return at once
            now = time.monotonic()
            bite = self._tick(now)
            player = self._player
            if player is not None:
                player.tick(now)
            with self.lock:
                events, self._events = self._events, []
            for pin, flags in events:
                self.hub.send_event(pin, flags)
            if bite:
                self.lifecycle.request_reset("wdt")
            self._wake.wait(max(0.0, self._next_due(time.monotonic()) - time.monotonic()))

    def _tick(self, now: float) -> bool:
        with self.lock:
            if self.lis is not None:
                self.lis.tick(now)
                self.motion.expire(now)
            if self.anemometer is not None:
                edges: list = []
                self.anemometer.advance(now, edges if self.pins.armed(PIN_REED) else None)
                for _t, level in edges:
                    self.pins.input_edge(PIN_REED, level)
            return self.wdt.expired(now)

    def _next_due(self, now: float) -> float:
        with self.lock:
            dues = [now + 1.0, self.wdt.next_due()]
            if self.lis is not None:
                due = self.lis.next_due(now)
                dues.append(None if due is None else max(due, now + 0.005))
            if self.anemometer is not None and self.pins.armed(PIN_REED):
                dues.append(self.anemometer.next_due(now))
            if self._player is not None:
                dues.append(self._player.next_due())
        return min(d for d in dues if d is not None and not math.isnan(d))
