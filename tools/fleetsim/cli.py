"""`fleet-sim`: provision simulated devices into a fleet home, then run them against its broker.

    fleet-sim provision --count 10000 --kind mixed            # FLEET_HOME's registry, passwd, acl
    fleet-sim run --duration 600 --scenario typhoon --speed 3 --rate 0.2 --procs 2 --report sent.json

OTA: devices provisioned with `--board emulator` and run with `--bundle` (the `fleet build` bundle they
run: its version, files and trust list) take the fleet's offers as agents do (`fleet ota rollout`):

    fleet-sim provision --count 1000 --kind water-level --board emulator
    fleet-sim run --bundle build/bundle-1.0.0 --duration 3600 --ota-rollback-share 0.2 --report sent.json &
    fleet ota rollout 1.1.0 --waves 1%,10%,50%,100% --max-failures 5%; kill %1   # SIGTERM: report, exit
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fleet.errors import FleetError

KIND_CHOICES = ("water-level", "manhole-tilt", "wind-load", "mixed")


def _home(home: Path | None) -> Path:
    from fleet.home import fleet_home, private_dir

    return private_dir(home) if home else fleet_home()


@click.group()
def cli() -> None:
    """Simulated sensor nodes by the thousand, speaking the real protocol (protocols/SPEC.md)."""


@cli.command()
@click.option("--count", type=click.IntRange(1, 1_000_000), required=True, help="How many devices.")
@click.option("--kind", type=click.Choice(KIND_CHOICES), default="mixed", show_default=True,
              help="Their kind; mixed cycles through the three.")
@click.option("--prefix", default="sim", show_default=True, help="Device ids are PREFIX-<wl|mh|wd>-<nnnnn>.")
@click.option("--first", type=int, default=1, show_default=True, help="Number of the first device.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="FLEET_HOME",
              help="Fleet home [default: $FLEET_HOME].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Devices file with the secrets [default: FLEET_HOME/fleetsim-devices.json; appended to].")
@click.option("--reload/--no-reload", default=True, show_default=True,
              help="SIGHUP the fleet's running broker so the new accounts work at once.")
@click.option("--board", default="fleetsim", show_default=True,
              help="The board the registry lists (an OTA campaign takes devices of its release's board: "
                   "emulator or esp32).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def provision(count: int, kind: str, prefix: str, first: int, home: Path | None, out: Path | None,
              reload: bool, board: str, as_json: bool) -> None:
    """Register COUNT simulated devices with their own credentials and rewrite the broker's passwd/acl."""
    from tools.fleetsim.provision import provision as run_provision

    figures = run_provision(_home(home), count, kind, prefix, first, out, reload, board=board)
    if as_json:
        click.echo(json.dumps(figures))
        return
    click.echo("registered %(devices)d devices of fleet %(fleet)s in %(total_s).2f s (credentials %(credentials_s).2f s, "
               "registry %(registry_s).2f s, broker files %(broker_files_s).2f s)" % figures)
    click.echo("devices file: %s" % figures["devices_file"])
    click.echo("broker files: %s (%s)" % (figures["broker_dir"], "reloaded" if figures["broker_reloaded"]
                                           else "no running broker signalled"))


@cli.command()
@click.option("--devices", "devices_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Devices file of `fleet-sim provision` [default: FLEET_HOME/fleetsim-devices.json].")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="FLEET_HOME",
              help="Fleet home [default: $FLEET_HOME].")
@click.option("--broker", help="mqtt://HOST:PORT [default: the one in the devices file].")
@click.option("--count", type=click.IntRange(1), help="Run only the first COUNT devices of the file.")
@click.option("--duration", type=click.FloatRange(0.1), default=60.0, show_default=True,
              help="Seconds of sampling; then the outboxes drain and everyone disconnects.")
@click.option("--scenario", default="quiet-day", show_default=True,
              help="quiet-day, rainstorm, typhoon, manhole-lift, or a scenario JSON file.")
@click.option("--speed", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Scenario seconds per second.")
@click.option("--rate", type=click.FloatRange(min=0.0), default=None,
              help="Telemetry packs a second per device [default 0.1].")
@click.option("--total-rate", type=click.FloatRange(min=0.0), default=None,
              help="Telemetry packs a second over all devices (instead of --rate).")
@click.option("--jitter", type=click.FloatRange(0.0, 0.99), default=0.2, show_default=True,
              help="Each sampling period varies by this fraction.")
@click.option("--health-s", type=click.FloatRange(min=0.1), default=300.0, show_default=True)
@click.option("--outage-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of devices whose link goes down once (backlog sent after it).")
@click.option("--outage-s", type=click.FloatRange(min=0.0), default=30.0, show_default=True)
@click.option("--misbehave-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of devices that resend, reorder and send garbage.")
@click.option("--misbehave-p", type=click.FloatRange(0.0, 1.0), default=0.1, show_default=True,
              help="Chance per sample of one misbehaviour on such a device.")
@click.option("--outbox-max", type=click.IntRange(1), default=1000, show_default=True,
              help="Records an outbox keeps; older ones are dropped (gaps).")
@click.option("--drain-rate", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="Outbox messages a second per device after an outage.")
@click.option("--procs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes, each with a share of the devices.")
@click.option("--drain-timeout", type=click.FloatRange(min=0.0), default=60.0, show_default=True,
              help="After sampling, seconds to wait for outboxes to empty and updates to settle.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON report of what was sent here.")
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The `fleet build` bundle the devices run (version, files, trusted release keys) "
                   "[default: none, version sim-1.0: every OTA release is refused, UNTRUSTED_KEY].")
@click.option("--ota-boot-s", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Seconds each restart of an update takes (into update mode, trial, rollback).")
@click.option("--ota-rollback-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of devices whose new release crashes on trial: rolled back, CRASHED.")
@click.option("--ota-fail-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of devices without the flash an update needs: failed, NO_SPACE.")
@click.option("--ota-cut-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of devices that lose their link once mid-download, then resume.")
@click.option("--ota-cut-s", type=click.FloatRange(min=0.0), default=3.0, show_default=True,
              help="How long that link stays down.")
def run(devices_file: Path | None, home: Path | None, broker: str | None, count: int | None, duration: float,
        scenario: str, speed: float, rate: float | None, total_rate: float | None, jitter: float, health_s: float,
        outage_share: float, outage_s: float, misbehave_share: float, misbehave_p: float, outbox_max: int,
        drain_rate: float, procs: int, drain_timeout: float, seed: int, report_path: Path | None,
        bundle: Path | None, ota_boot_s: float, ota_rollback_share: float, ota_fail_share: float,
        ota_cut_share: float, ota_cut_s: float) -> None:
    """Connect the simulated devices and run them; print the totals, write the report. SIGTERM ends the
    sampling early (the outboxes drain and the report is written as usual)."""
    from tools.fleetsim import report
    from tools.fleetsim.context import Settings
    from tools.fleetsim.provision import DEVICES_FILE, load_devices
    from tools.fleetsim.runner import run as run_devices
    from tools.fleetsim.scenario import load

    if rate is not None and total_rate is not None:
        raise FleetError("give --rate (per device) or --total-rate (all devices), not both")
    if ota_rollback_share + ota_fail_share + ota_cut_share > 1.0:
        raise FleetError("--ota-rollback-share, --ota-fail-share and --ota-cut-share add up to more than 1")
    doc = load_devices(devices_file or _home(home) / DEVICES_FILE)
    specs = doc["devices"][:count] if count else doc["devices"]
    if not specs:
        raise FleetError("the devices file lists no devices")
    host, port = doc.get("broker", {}).get("host", "127.0.0.1"), doc.get("broker", {}).get("port", 1883)
    if broker:
        from fleet.broker_address import parse_broker_url

        address = parse_broker_url(broker)
        host, port = address.host, address.port
    try:
        load(scenario)
    except Exception as error:  # noqa: BLE001 - BoardEmuError or ValueError: one line for the user
        raise FleetError(str(error)) from None
    per_device = total_rate / len(specs) if total_rate is not None else 0.1 if rate is None else rate
    settings = Settings(host=host, port=port, fleet=doc.get("fleet", "city"), duration=duration, scenario=scenario,
                        speed=speed, rate=per_device, jitter=jitter, health_s=health_s, outage_share=outage_share,
                        outage_s=outage_s, misbehave_share=misbehave_share, misbehave_p=misbehave_p,
                        outbox_max=outbox_max, drain_rate=max(drain_rate, 2 * per_device), seed=seed,
                        drain_timeout=drain_timeout, bundle=str(bundle) if bundle else None, ota_boot_s=ota_boot_s,
                        ota_rollback_share=ota_rollback_share, ota_fail_share=ota_fail_share,
                        ota_cut_share=ota_cut_share, ota_cut_s=ota_cut_s)
    if bundle:
        from tools.fleetsim.firmware import Firmware

        Firmware.from_bundle(bundle)  # a bad bundle is one line here, not a traceback per process
    result = run_devices(settings, specs, procs)
    if report_path:
        report.write(result, report_path)
    totals = result["totals"]
    click.echo("%(devices)d devices, %(connected)d connected at most; %(publishes)d publishes (%(messages_s).0f/s "
               "while sampling), %(readings)d readings in %(telemetry)d packs acknowledged; garbage %(garbage)d, "
               "duplicates %(duplicates)d, reordered %(reordered)d, outages %(outages)d, wills %(wills)d, "
               "lost %(lost)d, uncertain %(uncertain)d; RSS %(rss_mb).0f MB, max lag %(max_lag_s).2f s" % totals)
    if totals["ota_offered"]:
        click.echo("OTA: %(ota_offered)d devices offered, %(ota_taken)d updates taken; done %(ota_done)d, failed "
                   "%(ota_failed)d, rolled back %(ota_rolled_back)d; %(ota_pulls)d pulls, %(ota_received)d bytes "
                   "received, %(ota_cuts)d links cut mid-download" % totals)
    for proc in result["processes"]:
        if proc.get("errors"):
            click.echo("process %d errors: %s" % (proc["index"], json.dumps(proc["errors"])), err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fleet-sim` console script: a user error is one `fleet-sim: <message>` line, exit 1."""
    try:
        cli.main(args=argv, prog_name="fleet-sim", standalone_mode=False)
    except FleetError as error:
        click.echo("fleet-sim: %s" % error, err=True)
        return 1
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("fleet-sim: interrupted", err=True)
        return 130
    except OSError as error:
        click.echo("fleet-sim: %s" % error, err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
