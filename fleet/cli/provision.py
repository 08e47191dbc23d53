"""`fleet provision`: the technician's one command on site; `fleet sync`: the self-tests left pending."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from fleet.errors import EXIT_FAILURE, FleetError
from fleet.registry import KINDS

PORT_HELP = "Serial port: a device path (/dev/ttyUSB0) or a pyserial URL (rfc2217://host:port, socket://host:port)."
BROKER_HELP = ("Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT, as the devices reach it "
               "[default: $FLEET_BROKER, else the listener of `fleet broker config`].")
BROKER_CA_HELP = ("With an mqtts:// broker: the PEM file of the CA certificate(s) that signed the broker's "
                  "certificate, for the node's identity and the self-test [default: $FLEET_BROKER_CA].")
TIMEOUT_HELP = "Seconds to wait for a device's birth and telemetry on the broker."
MARKS = {"PASS": "[green]PASS[/]", "FAIL": "[bold red]FAIL[/]", "PENDING": "[yellow]WAIT[/]"}


@click.command("provision")
@click.option("--port", required=True, help=PORT_HELP)
@click.option("--kind", required=True, type=click.Choice(KINDS), help="What the device measures.")
@click.option("--site", required=True, help="Where it is mounted, e.g. 'Harbour Rd 12, lamp post 3'.")
@click.option("--lat", type=click.FloatRange(-90, 90), default=None, help="Latitude, degrees.")
@click.option("--lon", type=click.FloatRange(-180, 180), default=None, help="Longitude, degrees.")
@click.option("--id", "device_id", default=None,
              help="Device id [default: kind prefix and the last 6 digits of the board's unique id, e.g. wl-4f81c2].")
@click.option("--broker", envvar="FLEET_BROKER", default=None, help=BROKER_HELP)
@click.option("--broker-ca", "broker_ca", envvar="FLEET_BROKER_CA", default=None, metavar="FILE", help=BROKER_CA_HELP)
@click.option("--mount-height", "mount_mm", type=click.IntRange(30, 4500), default=None,
              help="water-level: the ranger's height above the street in mm [default: measured to the dry street].")
@click.option("--board", type=click.Choice(["esp32", "emulator"]), default=None,
              help="Board to build the agent for [default: the board's own, from its sys.platform].")
@click.option("--baud", type=int, default=115200, show_default=True, help="Serial speed of the board's REPL.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True, help=TIMEOUT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome and checklist as JSON (no secrets).")
def provision(port: str, kind: str, site: str, lat: float | None, lon: float | None, device_id: str | None,
              broker: str | None, broker_ca: str | None, mount_mm: int | None, board: str | None, baud: int,
              timeout: float, as_json: bool) -> None:
    """Turn the board on PORT into a working device of the fleet, and check it end to end.

    Identifies the board, flashes the agent when it is missing or outdated, calibrates the sensor on
    the spot (manhole-tilt: the cover's resting orientation; water-level: the distance to the dry
    street, or --mount-height; wind-load: tares the load cell) and reads it, registers the device
    with its own MQTT credential (the secret goes only to the board), writes /device.json, updates
    and reloads the broker's passwd and ACL, restarts the board, and waits for its birth and first
    telemetry on the broker. Prints a PASS/FAIL checklist; exit 0 on PASS, 1 on FAIL, 3 when it
    could not do its job. Without a reachable broker everything is recorded locally and the
    end-to-end check stays pending: `fleet sync` completes it. Rerunning on the same board finishes
    an unfinished provisioning (with a new credential).

    \b
    Examples:
      fleet provision --port /dev/ttyUSB0 --kind water-level --site "Harbour Rd 12" --lat 53.54 --lon 9.98
      fleet provision --port /dev/ttyUSB0 --kind manhole-tilt --site "Mill St / 5th" --id mh-0042
      fleet provision --port /dev/ttyUSB1 --kind water-level --site "Quay 3" --mount-height 2750 --json
      fleet provision --port /dev/ttyUSB0 --kind wind-load --site "Ring 4" --broker mqtts://10.0.0.5:8883 \\
        --broker-ca city-ca.pem
    """
    from fleet.provision import Request
    from fleet.provision import provision as run

    if mount_mm is not None and kind != "water-level":
        raise click.UsageError("--mount-height goes with --kind water-level")
    request = Request(port, kind, site.strip(), lat, lon, device_id, _broker(broker, broker_ca), mount_mm, board,
                      baud, timeout)
    if as_json:
        outcome = run(request, None, _FlashProgress())
        click.echo(json.dumps(outcome.as_dict(), indent=1, sort_keys=True))
    else:
        console = _console()
        console.print("provisioning a %s device at %r on %s" % (kind, request.site, port), markup=False)
        outcome = run(request, lambda check: _print_check(console, check), _FlashProgress())
        if outcome.result == "PASS":
            console.print("[green]PASS[/]: %s is active (%.1f s)" % (outcome.device_id, outcome.seconds))
        elif outcome.result == "PENDING":
            console.print("[yellow]%s is registered; end-to-end check pending[/]: run `fleet sync` when the broker "
                          "is reachable (%.1f s)" % (outcome.device_id, outcome.seconds))
    if outcome.result == "FAIL":
        first = next(c for c in outcome.checks if c.status == "FAIL")
        raise FleetError("FAIL: %s: %s" % (first.name, first.detail), exit_code=EXIT_FAILURE)


@click.command("sync")
@click.option("--broker", envvar="FLEET_BROKER", default=None, help=BROKER_HELP)
@click.option("--broker-ca", "broker_ca", envvar="FLEET_BROKER_CA", default=None, metavar="FILE", help=BROKER_CA_HELP)
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True, help=TIMEOUT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (no secrets).")
def sync(broker: str | None, broker_ca: str | None, timeout: float, as_json: bool) -> None:
    """Bring the broker up to date with the registry and complete pending end-to-end checks.

    Rewrites the broker's passwd and ACL and reloads it, then waits for the birth and telemetry of
    every device whose self-test is pending (provisioned while the broker was unreachable); each one
    that passes becomes active. Exit 0 when all pass (or none was pending), 1 when one fails, 3 when
    the broker cannot be reached (they stay pending).

    \b
    Examples:
      fleet sync
      fleet sync --broker mqtt://10.0.0.5:1883 --timeout 120
      fleet sync --broker mqtts://10.0.0.5:8883 --broker-ca city-ca.pem
    """
    from fleet.selftest import sync as run

    outcome = run(_broker(broker, broker_ca), timeout)
    if as_json:
        click.echo(json.dumps(outcome.as_dict(), indent=1, sort_keys=True))
    else:
        _print_sync(outcome)
    if outcome.result == "FAIL":
        failed = sorted(device for device, (status, _) in outcome.devices.items() if status != "PASS")
        raise FleetError("FAIL: the end-to-end check of %s did not pass; they stay pending" % ", ".join(failed),
                         exit_code=EXIT_FAILURE)


def _broker(url: str | None, ca_file: str | None) -> Any:
    """The BrokerAddress of --broker and --broker-ca, checked; None (the fleet's default, resolved when
    needed) when neither was given."""
    from fleet.broker_address import broker_from_options

    return broker_from_options(url, ca_file, need_ca=True)


def _print_sync(outcome: Any) -> None:
    console = _console()
    console.print("broker: %s" % outcome.broker, markup=False)
    if not outcome.devices:
        console.print("no device is waiting for its end-to-end check")
    for device, (status, checks) in sorted(outcome.devices.items()):
        console.print("%s  %s" % (MARKS[status], device) + (": active" if status == "PASS" else ""))
        for check in checks:
            _print_check(console, check, indent="  ")
    for device in outcome.interrupted:
        console.print("[yellow]note[/]: %s's provisioning stopped before its identity reached the board; rerun "
                      "`fleet provision` on that board" % device)


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _print_check(console: Any, check: Any, indent: str = "") -> None:
    from rich.markup import escape

    console.print("%s%s  %-11s %s" % (indent, MARKS[check.status], check.name, escape(check.detail)))
    if check.status != "PASS" and check.fix:
        console.print("%s      %-11s [bold]→[/] %s" % (indent, "", escape(check.fix)))


class _FlashProgress:
    """fleet.flash.Observer on stderr: a bar while files go over serial on a terminal, else a line a step."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.progress: Any = None
        self.task: Any = None

    def stage(self, text: str) -> None:
        click.echo("  flash: %s" % text, err=True)

    def sending(self, total_bytes: int) -> None:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self.progress = Progress(TextColumn("  sending"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                     console=Console(stderr=True), transient=True)
            self.progress.start()
            self.task = self.progress.add_task("sending", total=total_bytes)

    def sent(self, nbytes: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, nbytes)

    def file_done(self, rel: str, action: str) -> None:
        """Files are counted in the checklist's agent line."""

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
