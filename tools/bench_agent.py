"""Agent benchmark: bytes a node sends on a quiet day, against publishing every sample.

The agent's own reporting code (agent/reporter.py: deadband, rate limit, heartbeat, alarms, SenML packs,
the flash outbox) runs here under CPython, fed a day of quiet-street readings at the node's real quiet-day
period, with the sensor noise the emulator models (water: ±0.3 cm ripple; tilt: 0.5 deg; wind: calm
air with 1–3 m/s puffs). Payload bytes are what the outbox holds for the broker. The reference is the
same samples each published as a one-reading pack, the naive design. MQTT framing is left out on both
sides (about 2 + topic bytes a message, which favours the naive design further).
"""

from __future__ import annotations

import random
import tempfile
import time

from agent import reconfig
from agent.config import AgentConfig
from agent.manhole import ManholeSensor
from agent.outbox import Outbox
from agent.reporter import Reporter, to_wire
from agent.sequence import Sequence
from agent.water import WaterSensor
from agent.wind import WindSensor
from protocols import messages
from protocols.senml_pack import PackBuilder
from protocols.telemetry import Telemetry

DAY_S = 86400
SENSORS = {"manhole-tilt": ManholeSensor, "water-level": WaterSensor, "wind-load": WindSensor}


def _quiet_values(kind: str, rng: random.Random) -> dict:
    if kind == "water-level":
        return {"level": max(0.0, rng.gauss(0.0, 0.3)), "rise": rng.gauss(0.0, 0.05)}
    if kind == "manhole-tilt":
        return {"tilt": abs(rng.gauss(0.4, 0.5)), "accel": rng.gauss(9.81, 0.02)}
    wind = max(0.0, rng.gauss(2.0, 1.0))
    return {"wind": wind, "gust": wind + abs(rng.gauss(1.0, 0.5)), "wind10": 2.0,
            "load": rng.gauss(0.0, 2.0)}


def quiet_day(kind: str, seed: int = 1) -> dict:
    """Bytes per day: (agent, publish-every-sample, samples) for `kind`."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as root:
        config = AgentConfig(kind, root + "/config.json")
        outbox = Outbox(root + "/outbox", max_segments=64)
        sequence = Sequence(root + "/seq")
        reporter = Reporter(config, outbox, sequence, root + "/alarms")
        # The app's rule (agent/app.py): the config's quiet-day period, never longer than the sensor's own.
        period = min(reconfig.sample_s(config, reporter.measures[0]), SENSORS[kind].SLOW_MS // 1000)
        start = int(time.time())
        naive = samples = 0
        single = PackBuilder(1)
        sent = 0
        for t in range(start, start + DAY_S, period):
            values = _quiet_values(kind, rng)
            reporter.sample(values, t)
            samples += 1
            for name in reporter.measures:
                wire, unit = to_wire(name, values[name])
                single.clear()
                single.add(name, wire, t, unit)
                naive += len(messages.encode(Telemetry(sequence.boot, 70000, single.pack())))
            while outbox.count:
                for _, _, payload in outbox.peek(16):
                    sent += len(payload)
                outbox.ack(len(outbox.peek(16)))
    return {"agent": sent, "naive": naive, "samples": samples, "period_s": period}


def run() -> dict:
    """Quiet-day bytes per day for each kind, as a share of publishing every sample."""
    result: dict = {"lines": []}
    for kind in ("manhole-tilt", "water-level", "wind-load"):
        figures = quiet_day(kind)
        result[kind] = figures
        result["lines"].append(
            "%-13s quiet day: %7d B/day sent vs %8d B/day publishing every sample (%d samples every %d s): %.1f%%"
            % (kind, figures["agent"], figures["naive"], figures["samples"], figures["period_s"],
               100.0 * figures["agent"] / figures["naive"]))
    return result


def main() -> None:
    for line in run()["lines"]:
        print(line)


if __name__ == "__main__":
    main()
