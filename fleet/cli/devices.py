"""`fleet devices`, `fleet device show`, `fleet device retire`: the registry as a person sees it.

Nothing here prints a credential hash: records come from the registry without it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from fleet.errors import FleetError
from fleet.registry import KINDS, STATES, open_registry

COLUMNS = ("id", "kind", "site", "state", "firmware", "uid", "updated")


@click.command("devices")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only devices of this kind.")
@click.option("--site", default=None, help="Only devices at this site (exact text).")
@click.option("--state", type=click.Choice(STATES), default=None, help="Only devices in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON (without secrets).")
def devices(kind: str | None, site: str | None, state: str | None, as_json: bool) -> None:
    """List the devices in the registry.

    \b
    Example:
      fleet devices --kind water-level --state active
    """

    found = open_registry().find(kind=kind, site=site, state=state)
    if as_json:
        click.echo(json.dumps(found, indent=1, sort_keys=True))
        return
    if not found:
        click.echo("no devices" + (" match" if kind or site or state else " registered yet"))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS, box=None, pad_edge=False)
    for record in found:
        table.add_row(*("" if record.get(col) is None else str(record.get(col)) for col in COLUMNS))
    Console(soft_wrap=True).print(table)


@click.group("device")
def device() -> None:
    """Look at or retire one device."""


@device.command("show")
@click.argument("device_id", metavar="ID")
@click.option("--store", "store_url", envvar="FLEET_STORE", default=None,
              help="Store the ingest writes to, for the reported config [default: FLEET_HOME/fleet.db if it exists].")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON (without secrets).")
def show(device_id: str, store_url: str | None, as_json: bool) -> None:
    """Show one device's record, its desired against reported config, and its history.

    The config line reads "pending" from `fleet config` until the device reports the desired
    version in force (its ack or its birth, as the ingest stored them).

    \b
    Example:
      fleet device show mh-0042 --json
    """
    from fleet.config_edit import config_state, describe, desired

    record = open_registry().get(device_id)
    state = config_state(record, store_url)
    if as_json:
        click.echo(json.dumps({**record, "config_state": state}, indent=1, sort_keys=True))
        return
    for name, value in record.items():
        if name not in ("history", "calibration", "credential", "config"):
            click.echo("%-15s %s" % (name, "" if value is None else value))
    click.echo("%-15s %s" % ("mqtt user", (record.get("credential") or {}).get("username") or "(none)"))
    click.echo("%-15s %s" % ("calibration", json.dumps(record.get("calibration"), sort_keys=True)))
    click.echo("%-15s %s" % ("config", _config_line(state)))
    for entry in describe(desired(record)[1]):
        click.echo("%-15s %s" % ("", entry))
    click.echo("history")
    for entry in record.get("history", []):
        click.echo("  %s  %-16s %s" % (entry.get("at"), entry.get("action"), _detail(entry.get("detail"))))


def _config_line(state: dict[str, Any]) -> str:
    reported = "not reported" if state["reported"] is None else "reported %s" % state["reported"]
    if state["state"] == "defaults":
        return "firmware defaults (the fleet sent none), %s" % reported
    line = "desired %s (sent %s), %s: %s" % (state["desired"], state["sent_at"], reported, state["state"])
    return line + (" (%s)" % ", ".join(state["reasons"]) if state["reasons"] else "")


@device.command("retire")
@click.argument("device_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--broker-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Broker folder to update [default: FLEET_HOME/broker].")
def retire(device_id: str, yes: bool, broker_dir: Path | None) -> None:
    """Retire a device: revoke its MQTT credential at once and keep its record and history.

    Rewrites the broker's password and ACL files and reloads a running Mosquitto (SIGHUP), so the
    device can no longer connect while every other client stays connected.

    \b
    Example:
      fleet device retire mh-0042 --yes
    """
    from fleet.broker import reload_broker, write_broker_files

    registry = open_registry()
    record = registry.get(device_id)
    if record["state"] != "retired":
        if not yes:
            if not sys.stdin.isatty():
                raise FleetError("retiring %s needs confirmation: add --yes" % device_id)
            click.confirm("Retire %s (%s at %s)? Its credential stops working at once."
                          % (device_id, record["kind"], record["site"]), abort=True)
        credential = record.get("credential")
        # Dropping the hash as well: a retired device's secret can never be switched back on by mistake.
        registry.update(device_id, state="retired",
                        credential={"username": credential["username"]} if credential else None)
        registry.append_history(device_id, "retired", "credential revoked")
        click.echo("retired %s" % device_id)
    else:
        click.echo("%s was already retired" % device_id)
    files = write_broker_files(registry, broker_dir)
    if reload_broker(files.folder):
        click.echo("broker reloaded: %s can no longer connect" % device_id)
    else:
        click.echo("no running broker for %s; the revocation applies when it starts" % files.folder)


def _detail(detail: Any) -> str:
    return detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
