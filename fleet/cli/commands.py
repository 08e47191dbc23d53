"""`fleet ping`, `fleet reboot`, `fleet config`: commands to one device, each waited for by its ack."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from fleet.errors import EXIT_FAILURE, FleetError

if TYPE_CHECKING:
    from fleet.broker_address import BrokerAddress

BROKER_HELP = ("Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT [default: $FLEET_BROKER, else the listener of "
               "`fleet broker config`].")
BROKER_CA_HELP = ("With an mqtts:// broker: the PEM file of the CA certificate(s) that signed the broker's "
                  "certificate [default: $FLEET_BROKER_CA, else the system's CAs].")
JSON_HELP = "Print the outcome as JSON."


def _broker(url: str | None, ca_file: str | None) -> BrokerAddress | None:
    from fleet.broker_address import broker_from_options

    return broker_from_options(url, ca_file)


@click.command("ping")
@click.argument("device_id", metavar="ID")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds to wait for the answer.")
@click.option("--broker", envvar="FLEET_BROKER", default=None, help=BROKER_HELP)
@click.option("--broker-ca", "broker_ca", envvar="FLEET_BROKER_CA", default=None, metavar="FILE", help=BROKER_CA_HELP)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def ping(device_id: str, timeout: float, broker: str | None, broker_ca: str | None, as_json: bool) -> None:
    """Ping a device and print the round trip time.

    Exit 0 when it answered, 3 when it did not within --timeout (offline or asleep: a ping is not
    kept for a device that is not connected).

    \b
    Examples:
      fleet ping wl-4f81c2
      fleet ping wl-4f81c2 --broker mqtts://10.0.0.5:8883 --broker-ca city-ca.pem
    """
    from fleet.commands import ping as run

    result = run(device_id, timeout, _broker(broker, broker_ca))
    if as_json:
        click.echo(json.dumps(result.as_dict(), sort_keys=True))
    else:
        click.echo("%s answered in %.0f ms (boot %d, config version %s)"
                   % (device_id, result.rtt_ms, result.boot, "?" if result.config is None else result.config))


@click.command("reboot")
@click.argument("device_id", metavar="ID")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Seconds to wait for the ack and the birth of the new boot.")
@click.option("--no-wait", is_flag=True, help="Return once the device acknowledged, without waiting for its birth.")
@click.option("--broker", envvar="FLEET_BROKER", default=None, help=BROKER_HELP)
@click.option("--broker-ca", "broker_ca", envvar="FLEET_BROKER_CA", default=None, metavar="FILE", help=BROKER_CA_HELP)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def reboot(device_id: str, timeout: float, no_wait: bool, broker: str | None, broker_ca: str | None,
           as_json: bool) -> None:
    """Restart a device and wait until it is back (a birth with a new boot id).

    The device acknowledges, saves its outbox and restarts. Exit 3 when it did not answer or did not
    come back within --timeout.

    \b
    Example:
      fleet reboot mh-0042
    """
    from fleet.commands import reboot as run

    result = run(device_id, timeout, not no_wait, _broker(broker, broker_ca))
    if as_json:
        click.echo(json.dumps(result.as_dict(), sort_keys=True))
    elif result.new_boot is None:
        click.echo("%s is rebooting (boot %d acknowledged)" % (device_id, result.old_boot))
    else:
        click.echo("%s rebooted: boot %d -> %d, back online in %.1f s"
                   % (device_id, result.old_boot, result.new_boot, result.seconds or 0.0))


@click.command("config")
@click.argument("device_id", metavar="ID")
@click.option("--set", "sets", multiple=True, required=True, metavar="KEY=VALUE",
              help="A change, repeatable: heartbeat=600, sample.level=10, deadband.level=5, "
                   "calibration.level=1.0,-12, alarm.flood.raise=300 (.clear .confirm .level .measure).")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True,
              help="Seconds to wait for the device's ack.")
@click.option("--no-wait", is_flag=True, help="Send and return; the device acks when it next connects.")
@click.option("--broker", envvar="FLEET_BROKER", default=None, help=BROKER_HELP)
@click.option("--broker-ca", "broker_ca", envvar="FLEET_BROKER_CA", default=None, metavar="FILE", help=BROKER_CA_HELP)
@click.option("--store", "store_url", envvar="FLEET_STORE", default=None,
              help="Store the ingest writes to (the device's reported config version) [default: FLEET_HOME/fleet.db].")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def config(device_id: str, sets: tuple[str, ...], timeout: float, no_wait: bool, broker: str | None,
           broker_ca: str | None, store_url: str | None, as_json: bool) -> None:
    """Change a device's config: a new version of its desired config, published retained.

    Each --set changes one entry of the desired config the fleet keeps for the device (start: the
    firmware defaults of its kind). An alarm the device does not have yet needs measure, raise,
    clear, confirm and level. The new version is sent retained, so a sleeping device gets it when it
    next connects. Exit 0 when applied, 1 when the device refused it (the reasons are printed; the
    fleet keeps it as desired: fix it with another --set), 3 on bad input or no answer in --timeout.

    \b
    Examples:
      fleet config wl-4f81c2 --set alarm.flood.raise=300 --set alarm.flood.clear=260
      fleet config mh-0042 --set heartbeat=600 --set sample.tilt=5 --no-wait
    """
    from fleet.commands import configure

    result = configure(device_id, list(sets), timeout, not no_wait, _broker(broker, broker_ca), store_url)
    if as_json:
        click.echo(json.dumps(result.as_dict(), sort_keys=True))
    elif result.status == "sent":
        click.echo("%s: config version %d sent (retained); `fleet device show %s` shows when it is in force"
                   % (device_id, result.version, device_id))
    elif result.status == "applied":
        click.echo("%s applied config version %d" % (device_id, result.version))
    if result.status == "refused":
        keeps = ("the rest is in force as version %d" % result.in_force if result.in_force == result.version
                 else "it keeps version %s" % ("?" if result.in_force is None else result.in_force))
        raise FleetError("%s refused config version %d: %s; %s" % (device_id, result.version,
                                                                  ", ".join(result.reasons), keeps),
                         exit_code=EXIT_FAILURE)
