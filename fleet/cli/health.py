"""`fleet health`: every device's health with the reason, for people, cron and monitoring.

Exit 0 when no device is critical, 1 when one is (with one `fleet:` line naming them on stderr), 3 when
the store or registry cannot be read. States and what is critical: fleet/health.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from fleet.cli.readings import iso, opened_store, store_option

COLOURS = {"healthy": "green", "degraded": "yellow", "stale": "bold red", "offline": "bold red",
           "never seen": "dim"}


def fleet_health(registry_records: list[dict[str, Any]], statuses: list[Any], gaps: list[Any],
                 now: float) -> list[dict[str, Any]]:
    """One row per registered (not retired) device and per seen-but-unregistered device, sorted by id."""
    from fleet.health import evaluate

    by_id = {s.device: s for s in statuses}
    records = {r["id"]: r for r in registry_records}
    gaps_of: dict[str, list[Any]] = {}
    for gap in gaps:  # grouped once: each device's own, not every gap of the fleet per device
        gaps_of.setdefault(gap.device, []).append(gap)
    rows = []
    for device_id in sorted(set(records) | set(by_id)):
        record = records.get(device_id)
        if record is not None and record.get("state") == "retired":
            continue  # not part of the fleet any more (its credential is revoked)
        status = by_id.get(device_id)
        verdict = evaluate(record, status, gaps_of.get(device_id, ()), now)
        rows.append({
            "id": device_id, "kind": (record or {}).get("kind"), "site": (record or {}).get("site"),
            "registered": record is not None, "state": verdict.state, "critical": verdict.critical,
            "reasons": [{"code": r.code, "text": r.text} for r in verdict.reasons],
            "last_seen": status.last_seen if status else None, "boot": status.boot if status else None,
            "firmware": status.firmware if status else None, "heartbeat": verdict.heartbeat,
            "missing": verdict.missing,
        })
    return rows


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="Print the fleet's health as JSON.")
@store_option
def health(as_json: bool, store_url: str | None) -> None:
    """Show every device as healthy, degraded, stale, offline or never seen, with the reason.

    Stale means silent for more than twice the device's own heartbeat (SenML ut), so a sleeping node is
    judged by its own promise. Exits 1 when any device is critical (offline, stale, or never seen an
    hour after its identity was written), so cron and monitoring can run it as it is.

    \b
    Examples:
      fleet health
      fleet health --json | jq '.devices[] | select(.state != "healthy")'
    """
    from fleet.errors import EXIT_FAILURE, FleetError
    from fleet.registry import open_registry

    now = time.time()
    records = open_registry().all()
    with opened_store(store_url) as store:
        rows = fleet_health(records, store.status(now=now), store.gaps(), now)
    critical = [r for r in rows if r["critical"]]
    if as_json:
        counts = {state: sum(r["state"] == state for r in rows) for state in COLOURS}
        click.echo(json_document({"time": now, "critical": len(critical), "counts": counts}, rows))
    else:
        _print(rows, now)
    if critical:
        names = ", ".join("%s (%s)" % (r["id"], r["state"]) for r in critical)
        raise FleetError("%d critical device%s: %s" % (len(critical), "" if len(critical) == 1 else "s", names),
                         exit_code=EXIT_FAILURE)


def json_document(head: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """`head` indented, then "devices": one row per line. json.dumps with indent runs the pure-Python
    encoder: 96 ms for 10,000 devices, against 43 ms for compact rows (C encoder); one line per device
    also suits grep and diff."""
    opening = json.dumps(head, indent=1)[:-2]  # a non-empty dict: ends with "\n}"
    body = ",\n  ".join(json.dumps(row) for row in rows)
    devices = '"devices": [\n  %s\n ]' % body if rows else '"devices": []'
    return "%s,\n %s\n}" % (opening, devices)


def _print(rows: list[dict[str, Any]], now: float) -> None:
    if not rows:
        click.echo("no devices registered or seen yet")
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fleet.health import human_duration

    table = Table("device", "kind", "state", "last seen", "boot", "firmware", "reasons", box=None, pad_edge=False)
    for r in rows:
        colour = COLOURS.get(r["state"], "")
        seen = "" if r["last_seen"] is None else "%s ago" % human_duration(now - r["last_seen"])
        table.add_row(r["id"], r["kind"] or "?", "[%s]%s[/]" % (colour, r["state"]), seen,
                      "" if r["boot"] is None else str(r["boot"]), r["firmware"] or "",
                      escape("; ".join(x["text"] for x in r["reasons"])))
    Console(soft_wrap=True).print(table)
    counts = ((sum(r["state"] == state for r in rows), state) for state in COLOURS)
    click.echo("%d devices: %s (at %s)" % (len(rows), ", ".join("%d %s" % c for c in counts if c[0]), iso(now)))
