"""`fleet alarms` and `fleet alarm ack`: the alarms devices and the fleet raised, and their acknowledgement."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from fleet.cli.readings import iso, opened_store, store_option

LEVELS = {1: "warning", 2: "alarm"}


def alarm_json(row: Any) -> dict[str, Any]:
    """An AlarmRow as JSON data: its fields (Unix seconds) and `active`."""
    return {**asdict(row), "active": row.cleared_at is None}


@click.command("alarms")
@click.option("--active", is_flag=True, help="Only alarms not cleared yet.")
@click.option("--device", "device_id", default=None, metavar="ID", help="Only the alarms of this device.")
@click.option("--json", "as_json", is_flag=True, help="Print the alarms as JSON (times in Unix seconds).")
@store_option
def alarms(active: bool, device_id: str | None, as_json: bool, store_url: str | None) -> None:
    """List alarms, newest first: raised by a device (source device) or by the fleet's own threshold
    check on the device's readings (source fleet).

    \b
    Examples:
      fleet alarms --active
      fleet alarms --device wl-4f81c2 --json
    """
    with opened_store(store_url) as store:
        rows = store.alarms(active=active, device=device_id)
    if as_json:
        click.echo(json.dumps([alarm_json(r) for r in rows], indent=1))
        return
    if not rows:
        click.echo("no %salarms%s" % ("active " if active else "", " of %s" % device_id if device_id else ""))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "device", "alarm", "level", "source", "raised", "value", "threshold", "cleared", "ack",
                  box=None, pad_edge=False)
    for r in rows:
        level = LEVELS.get(r.level, str(r.level))
        cleared = "[bold red]active[/]" if r.cleared_at is None else iso(r.cleared_at)
        if r.cleared_at is not None and r.clear_value is not None:
            cleared += " (%g)" % r.clear_value
        ack = "" if r.acked_by is None else "%s %s" % (r.acked_by, iso(r.acked_at))
        if r.note:
            ack += ": " + r.note
        table.add_row(str(r.id), r.device, r.alarm, level, r.source, iso(r.raised_at), "%g" % r.raise_value,
                      "%g" % r.threshold, cleared, ack)
    Console(soft_wrap=True).print(table)


@click.group("alarm")
def alarm() -> None:
    """Act on one alarm."""


@alarm.command("ack")
@click.argument("alarm_id", metavar="ID", type=int)
@click.option("--by", "by", required=True, metavar="NAME", help="Who acknowledges (an operator's name).")
@click.option("--note", default=None, metavar="TEXT", help="A comment kept with the alarm.")
@click.option("--json", "as_json", is_flag=True, help="Print the acknowledged alarm as JSON.")
@store_option
def ack(alarm_id: int, by: str, note: str | None, as_json: bool, store_url: str | None) -> None:
    """Acknowledge alarm ID (from `fleet alarms`), with an optional note.

    \b
    Example:
      fleet alarm ack 17 --by dana --note "crew sent, ETA 20 min"
    """
    from fleet.errors import EXIT_USAGE, FleetError

    if not by.strip():
        raise FleetError("--by needs a name: who acknowledges the alarm", exit_code=EXIT_USAGE)
    with opened_store(store_url) as store:
        row = store.ack_alarm(alarm_id, by.strip(), note)
    if as_json:
        click.echo(json.dumps(alarm_json(row), indent=1))
        return
    click.echo("alarm %d (%s %s, %s) acknowledged by %s%s" % (
        row.id, row.device, row.alarm, "active" if row.cleared_at is None else "cleared", row.acked_by,
        ": " + row.note if row.note else ""))
