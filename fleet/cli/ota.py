"""`fleet ota keygen|release|releases`: release keys and signed releases; `fleet ota rollout|status|pause|
resume|abort`: campaigns that update devices in waves (fleet/ota/campaign.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import click

COLUMNS = ("seq", "version", "board", "files", "bytes", "compressed", "key_id", "status", "notes")


@click.group("ota")
def ota() -> None:
    """Over-the-air updates: release keys, signed releases, campaigns."""


@ota.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write NAME.key and NAME.pub to (created 0700 when missing).")
@click.option("--name", default="release", show_default=True, help="Base name of the two files.")
def keygen(out_dir: Path, name: str) -> None:
    """Create an Ed25519 release key pair: NAME.key (private, PKCS#8 PEM, 0600) and NAME.pub (public, hex).

    Neither file is ever overwritten. Bundles trust NAME.pub (`fleet build --trust NAME.pub`);
    NAME.key signs releases and can live off the fleet server.

    \b
    Example:
      fleet ota keygen --out ~/keys --name city-2025
    """
    from fleet.ota.keys import keygen as make_keys
    from protocols.manifest import key_id

    key_path, pub_path = make_keys(out_dir, name)
    click.echo("wrote %s (private: keep it safe) and %s (key id %s)"
               % (key_path, pub_path, key_id(bytes.fromhex(pub_path.read_text().strip())).hex()))


@ota.command("release")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private release key (NAME.key from `fleet ota keygen`).")
@click.option("--notes", default=None, help="Release notes (up to 200 characters).")
@click.option("--version", "version", default=None, help="Release version [default: the bundle's].")
@click.option("--json", "as_json", is_flag=True, help="Print the stored release as JSON.")
def release(bundle: Path, key_path: Path, notes: str | None, version: str | None, as_json: bool) -> None:
    """Sign BUNDLE (from `fleet build --trust KEY.pub`) as the next release and store it in FLEET_HOME.

    Every slot file is compressed and listed with its size and SHA-256 in a manifest with the next
    release sequence number, signed with Ed25519. Refused: a bundle that does not trust the key's
    public half (devices running it would refuse the next release).

    \b
    Example:
      fleet ota release build/agent-1.5.0 --key ~/keys/city-2025.key --notes "faster tilt filter"
    """
    from fleet.ota.release import make_release

    info = make_release(bundle, key_path, notes=notes, version=version)
    if as_json:
        click.echo(json.dumps(info, indent=1, sort_keys=True))
        return
    click.echo("release %d: %s for %s, %d files, %d bytes (%d compressed), key %s -> %s"
               % (info["seq"], info["version"], info["board"], info["files"], info["bytes"], info["compressed"],
                  info["key_id"], info["dir"]))


@ota.command("releases")
@click.option("--json", "as_json", is_flag=True, help="Print the releases as JSON.")
def releases(as_json: bool) -> None:
    """List the stored releases, oldest first.

    STATUS is "ok" when the signature (by a key the release's own trust.cbor lists) and every stored
    file check out; otherwise it says why the release would be refused.
    """
    from fleet.ota.store import list_releases

    found = list_releases()
    if as_json:
        click.echo(json.dumps(found, indent=1, sort_keys=True))
        return
    if not found:
        click.echo("no releases yet (make one with `fleet ota release`)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS, box=None, pad_edge=False)
    for info in found:
        table.add_row(*("" if info.get(col) is None else str(info.get(col)) for col in COLUMNS))
    Console(soft_wrap=True).print(table)


BROKER_HELP = ("Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT [default: $FLEET_BROKER, else the listener of "
               "`fleet broker config`].")
BROKER_CA_HELP = ("With an mqtts:// broker: the PEM file of the CA certificate(s) that signed the broker's "
                  "certificate [default: $FLEET_BROKER_CA, else the system's CAs].")
DEVICE_COLUMNS = ("device", "wave", "state", "reason", "progress", "sent", "note")


def _broker(url: str | None, ca_file: str | None) -> Any:
    from fleet.broker_address import broker_from_options

    return broker_from_options(url, ca_file)


@ota.command("rollout")
@click.argument("ref", metavar="RELEASE")
@click.option("--select", default=None, metavar="KEY=VALUE,...",
              help="Devices of the registry to update: id (takes * and ?), kind, site, state, board; a key given "
                   "twice accepts either [default: every device that is not retired].")
@click.option("--waves", default="1%,10%,50%,100%", show_default=True,
              help="Cumulative shares of the devices per wave, ending at 100%; each wave has at least one device.")
@click.option("--max-failures", default="5%", show_default=True,
              help="Abort when failures (failed, rolled back, timed out) exceed this share of the devices with an "
                   "outcome.")
@click.option("--min-devices", type=click.IntRange(1), default=1, show_default=True,
              help="Devices with an outcome before --max-failures applies.")
@click.option("--timeout", default="30m", show_default=True,
              help="Time a device has from its offer to an outcome (an offline device gets the offer when it "
                   "connects within it).")
@click.option("--broker", envvar="FLEET_BROKER", default=None, help=BROKER_HELP)
@click.option("--broker-ca", "broker_ca", envvar="FLEET_BROKER_CA", default=None, metavar="FILE", help=BROKER_CA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (progress goes to stderr).")
def rollout(ref: str, select: str | None, waves: str, max_failures: str, min_devices: int, timeout: str,
            broker: str | None, broker_ca: str | None, as_json: bool) -> None:
    """Update devices to RELEASE in waves, in the foreground until the campaign is done or aborted.

    A wave starts once every device of the waves before it has an outcome; the campaign aborts itself as
    soon as failures exceed --max-failures (then no device starts the update). Devices already running
    the release count as done. `fleet ota pause|resume|abort CAMPAIGN` steer it from another terminal;
    Ctrl-C aborts it. Exit 0 when it is done, 1 when it aborted.

    \b
    Example:
      fleet ota rollout 1.5.0 --select kind=water-level --waves 1%,10%,50%,100% --max-failures 5%
    """
    from fleet.errors import EXIT_FAILURE, FleetError
    from fleet.ota.campaign import ABORTED, run_rollout, summary

    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    # SIGTERM (a service manager, a closed session) aborts like Ctrl-C: offers never outlive their server
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        campaign = run_rollout(ref, select, waves, max_failures, min_devices, timeout, _broker(broker, broker_ca),
                               echo=echo)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        click.echo(json.dumps(_status_doc(campaign, False), indent=1, sort_keys=True))
    info = summary(campaign)
    if campaign.state == ABORTED:
        raise FleetError("campaign %s aborted: %s; its offers are cleared, %d device(s) never got one"
                         % (campaign.id, info["reason"], info["counts"]["pending"]), exit_code=EXIT_FAILURE)
    if not as_json:
        click.echo("campaign %s done: %d of %d devices run %s" % (campaign.id, info["counts"]["done"],
                                                                 info["devices"], info["release"]["version"]))


@ota.command("status")
@click.argument("campaign_id", metavar="[CAMPAIGN]", required=False)
@click.option("--store", "store_url", envvar="FLEET_STORE", default=None, metavar="URL",
              help="Also read the devices' OTA reports the ingest stored (later than the rollout saw) "
                   "[default: the fleet home's store, when it exists].")
@click.option("--json", "as_json", is_flag=True, help="Print the campaign as JSON.")
def status(campaign_id: str | None, store_url: str | None, as_json: bool) -> None:
    """Show a campaign (the newest by default): its state, waves and each device's state and reason.

    A device that rolled back is shown rolled_back whatever it reported before or after.
    """
    from fleet.ota.campaign import load, progress_line, running_rollout

    campaign = load(campaign_id)
    _merge_store(campaign, store_url)
    running = running_rollout() == campaign.id
    doc = _status_doc(campaign, running)
    if as_json:
        click.echo(json.dumps(doc, indent=1, sort_keys=True))
        return
    info = doc["campaign"]
    state = info["state"] + ("" if running or info["state"] in ("done", "aborted") else
                             " (no rollout runs it: `fleet ota abort %s` clears its offers)" % campaign.id)
    click.echo("campaign %s: %s, release %d (%s), %d devices in waves of %s, max failures %s"
               % (campaign.id, state, info["release"]["seq"], info["release"]["version"], info["devices"],
                  "/".join(map(str, info["sizes"])), campaign.doc["max_failures"]))
    if info["reason"]:
        click.echo("reason: %s" % info["reason"])
    click.echo(progress_line(campaign))
    from rich.console import Console
    from rich.table import Table

    table = Table(*(c.upper() for c in DEVICE_COLUMNS), box=None, pad_edge=False)
    for row in doc["devices"]:
        table.add_row(row["device"], str(row["wave"]), row["state"], row["reason"] or "",
                      "" if row["percent"] is None else "%d%%" % row["percent"],
                      "" if row["sent"] is None else str(row["sent"]), row["note"] or "")
    Console(soft_wrap=True).print(table)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _status_doc(campaign: Any, running: bool) -> dict[str, Any]:
    from fleet.ota.campaign import summary

    rows = [{"device": name, "wave": dev["wave"] + 1, "state": dev["state"], "reason": dev["reason"],
             "percent": dev["percent"], "sent": dev.get("sent"), "note": dev["note"], "cid": dev["cid"],
             "offered_at": dev["offered_at"], "ended_at": dev["ended_at"]}
            for name, dev in sorted(campaign.devices.items(), key=lambda item: (item[1]["wave"], item[0]))]
    return {"campaign": summary(campaign), "rollout_running": running, "devices": rows}


def _merge_store(campaign: Any, store_url: str | None) -> None:
    """Apply the OTA reports the ingest stored for the campaign's cids (what came after the rollout ended)."""
    from fleet.home import fleet_home
    from fleet.ota.campaign import PENDING
    from fleet.store import DB_FILE, open_store

    if store_url is None and not (fleet_home() / DB_FILE).exists():
        return
    store = open_store(store_url)
    try:
        for name, dev in campaign.devices.items():
            if dev["state"] != PENDING:
                for row in store.ota(name, dev["cid"]):
                    campaign.progress(name, row["cid"], row["boot"], row["seq"], row["state"], row["percent"],
                                      row["reason"], row["received"])
    finally:
        store.close()


def _steer(command: str, campaign_id: str, broker: str | None, broker_ca: str | None = None) -> Any:
    from fleet.ota.campaign import control

    return control(campaign_id, command, _broker(broker, broker_ca))


@ota.command("pause")
@click.argument("campaign_id", metavar="CAMPAIGN")
def pause(campaign_id: str) -> None:
    """Hold a running campaign: no new wave starts; devices already offered go on."""
    campaign = _steer("pause", campaign_id, None)
    click.echo("campaign %s %s" % (campaign.id, "paused: no new wave starts until `fleet ota resume %s`"
                                   % campaign.id if campaign.state == "paused" else "ended (%s)" % campaign.state))


@ota.command("resume")
@click.argument("campaign_id", metavar="CAMPAIGN")
def resume(campaign_id: str) -> None:
    """Let a paused campaign start its next waves again."""
    campaign = _steer("resume", campaign_id, None)
    click.echo("campaign %s %s" % (campaign.id, campaign.state))


@ota.command("abort")
@click.argument("campaign_id", metavar="CAMPAIGN")
@click.option("--broker", envvar="FLEET_BROKER", default=None, help=BROKER_HELP)
@click.option("--broker-ca", "broker_ca", envvar="FLEET_BROKER_CA", default=None, metavar="FILE", help=BROKER_CA_HELP)
def abort(campaign_id: str, broker: str | None, broker_ca: str | None) -> None:
    """Stop a campaign: cancel downloads, clear every offer; no device starts the update any more.

    Works whether or not its rollout still runs (without one, this clears the offers itself).
    """
    from fleet.ota.campaign import summary

    campaign = _steer("abort", campaign_id, broker, broker_ca)
    info = summary(campaign)
    click.echo("campaign %s %s: offers cleared; %d device(s) never got one" % (
        campaign.id, campaign.state, info["counts"]["pending"]))
