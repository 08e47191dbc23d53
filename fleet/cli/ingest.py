"""`fleet ingest`: the operations centre's long-running service that stores what the devices send."""

from __future__ import annotations

import click

BROKER_HELP = ("Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT [default: $FLEET_BROKER, else the listener "
               "of `fleet broker config`].")
BROKER_CA_HELP = ("With an mqtts:// broker: the PEM file of the CA certificate(s) that signed the broker's "
                  "certificate [default: $FLEET_BROKER_CA, else the system's CAs].")
STORE_HELP = ("Store URL: sqlite:///ABSOLUTE/PATH.db or postgresql://USER@HOST:PORT/DB "
              "[default: $FLEET_STORE, else sqlite:///FLEET_HOME/fleet.db].")


@click.command("ingest")
@click.option("--broker", envvar="FLEET_BROKER", default=None, help=BROKER_HELP)
@click.option("--broker-ca", "broker_ca", envvar="FLEET_BROKER_CA", default=None, metavar="FILE", help=BROKER_CA_HELP)
@click.option("--store", "store_url", envvar="FLEET_STORE", default=None, help=STORE_HELP)
@click.option("--quiet", is_flag=True, help="Log only warnings and errors, not the counters every 10 s.")
@click.option("--shared", metavar="GROUP", envvar="FLEET_INGEST_SHARED", default=None,
              help="Be one worker of shared-subscription group GROUP: the broker splits the stream between them.")
@click.option("--worker", type=click.IntRange(0, 999), envvar="FLEET_INGEST_WORKER", default=0, show_default=True,
              help="This worker's number in the group; a restarted worker must keep its number.")
@click.option("--fleet-alarms/--no-fleet-alarms", envvar="FLEET_INGEST_FLEET_ALARMS", default=True, show_default=True,
              help="Check readings against each device's thresholds; off for --shared workers unless the broker "
                   "keeps each device on one worker (README).")
def ingest(broker: str | None, broker_ca: str | None, store_url: str | None, quiet: bool, shared: str | None,
           worker: int, fleet_alarms: bool) -> None:
    """Store every device message until stopped (SIGTERM or Ctrl-C).

    Subscribes to dt/<fleet>/+/+ as the fleet's own account (fleet-ops), validates each message against
    the protocol and writes readings, events, health and state in batches; a message is acknowledged to
    the broker only once it is stored, so a crash loses nothing sent with QoS 1 and a resend is dropped
    as a duplicate. A message that fails to decode or validate is logged and kept in the quarantine.
    Readings are also checked against each device's alarm thresholds (alarms of source "fleet").
    Logs to stderr: connection changes, quarantined messages, and the counters every 10 s.

    With --shared GROUP, several workers (--worker 0, 1, ...) subscribe to $share/GROUP/dt/<fleet>/+/+
    and the broker (MQTT 5) gives each message to one of them. Each keeps its own session: a worker that
    stops keeps its share queued at the broker until it comes back with the same --worker number.

    \b
    Example:
      fleet ingest --store postgresql://postgres@127.0.0.1:5432/fleet
      fleet ingest --store postgresql://postgres@127.0.0.1:5432/fleet --shared ingest --worker 1
    """
    from fleet.ingest.service import configure_logging, run, settings_for

    if worker and not shared:
        raise click.UsageError("--worker goes with --shared GROUP")
    configure_logging(quiet)
    settings = settings_for(broker, store_url, shared=shared, worker=worker, broker_ca=broker_ca)
    settings.fleet_alarms = fleet_alarms
    run(settings)
