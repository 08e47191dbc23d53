"""Bytes per telemetry message: SenML-CBOR (our wire form) against SenML-JSON and a plain JSON object.

For a typical pack of each sensor kind, one reading and a ten-reading backfill (one reading a minute), all
three carry the same content: protocol version, boot id, sequence number, and per reading name, value and
time (the JSON forms also the unit, which SenML-CBOR leaves to the catalogue, SPEC.md "Measurements").
Aim (issue 2): one reading <= 25 bytes, a ten-reading backfill <= 10 bytes a reading.
"""

from __future__ import annotations

import json

NOW = 1_732_850_000
BOOT = 12
#: seq early in a device's life (3 bytes of CBOR) and after 65536 messages (5 bytes, the steady state)
SEQS = {"seq<65536": 40_000, "seq>=65536": 3_000_000_000}
#: kind -> (measurement, values of ten readings); tilt is a float (deg), level (mm) and load (N) ints
KINDS = {
    "manhole tilt": ("tilt", [0.5, 0.5, 0.75, 1.25, 2.5, 4.0, 7.5, 12.25, 12.5, 12.0]),
    "water level": ("level", [0, 0, 12, 31, 55, 84, 112, 140, 151, 149]),
    "billboard load": ("load", [1830, 1904, 2210, 2650, 3120, 2980, 2701, 2555, 2410, 2395]),
}
AIM_ONE = 25
AIM_PER_READING = 10


def _readings(name: str, values: list, count: int) -> list:
    # the newest reading is "now"; older ones a minute apart
    picked = values[-count:]
    return [(name, value, NOW - 60 * (len(picked) - 1 - i)) for i, value in enumerate(picked)]


def _senml_cbor(readings: list, seq: int) -> bytes:
    from protocols.messages import encode
    from protocols.senml_pack import PackBuilder
    from protocols.telemetry import Telemetry

    builder = PackBuilder(len(readings))
    for name, value, time in readings:
        builder.add(name, value, time)
    return encode(Telemetry(BOOT, seq, builder.pack()))


def _senml_json(readings: list, seq: int) -> bytes:
    from protocols.senml import MEASUREMENTS
    from protocols.senml_pack import PackBuilder
    from protocols.senml_resolve import LABELS

    builder = PackBuilder(len(readings))
    for name, value, time in readings:
        builder.add(name, value, time)
    pack = [{LABELS[k]: v for k, v in record.items()} for record in builder.pack()]
    # SenML-JSON has no catalogue in practice: a consumer needs the unit, so it goes in as bu/u
    pack[0]["bu" if len(pack) > 1 else "u"] = MEASUREMENTS[readings[0][0]]
    return json.dumps([1, BOOT, seq] + pack, separators=(",", ":")).encode()


def _plain_json(readings: list, seq: int) -> bytes:
    from protocols.senml import MEASUREMENTS

    body = {
        "v": 1,
        "boot": BOOT,
        "seq": seq,
        "readings": [{"name": n, "unit": MEASUREMENTS[n], "value": v, "time": t} for n, v, t in readings],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def run() -> dict:
    """Measure every kind x (1, 10 readings) x seq size; returns figures and printable lines."""
    figures: dict = {}
    lines = []
    worst_one = worst_per = 0.0
    for kind, (name, values) in KINDS.items():
        for count in (1, 10):
            readings = _readings(name, values, count)
            for seq_label, seq in SEQS.items():
                sizes = {
                    "senml_cbor": len(_senml_cbor(readings, seq)),
                    "senml_json": len(_senml_json(readings, seq)),
                    "plain_json": len(_plain_json(readings, seq)),
                }
                key = f"{kind}/{count}/{seq_label}"
                figures[key] = sizes
                per = sizes["senml_cbor"] / count
                if count == 1:
                    worst_one = max(worst_one, per)
                else:
                    worst_per = max(worst_per, per)
                share = 100.0 * sizes["senml_cbor"] / sizes["plain_json"]
                lines.append(
                    f"{kind:<15} {count:2d} reading(s) {seq_label:<10}  SenML-CBOR {sizes['senml_cbor']:4d} B "
                    f"({per:5.1f} B/reading)  SenML-JSON {sizes['senml_json']:4d} B  "
                    f"plain JSON {sizes['plain_json']:4d} B  (CBOR = {share:.0f}% of plain JSON)"
                )
    lines.append(
        f"aim: one reading <= {AIM_ONE} B (worst measured {worst_one:.0f} B), "
        f"backfill <= {AIM_PER_READING} B/reading (worst measured {worst_per:.1f} B)"
    )
    return {"figures": figures, "worst_one_reading": worst_one, "worst_backfill_per_reading": worst_per,
            "lines": lines}


def main() -> None:
    """Print the table."""
    for line in run()["lines"]:
        print(line)


if __name__ == "__main__":
    main()
