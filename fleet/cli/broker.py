"""`fleet broker config`: Mosquitto's password, ACL and configuration files from the registry."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click


@click.group("broker")
def broker() -> None:
    """The fleet's Mosquitto broker: its configuration from the registry."""


@broker.command("config")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write [default: FLEET_HOME/broker].")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Listener port [default: the folder's last one, else 1883].")
@click.option("--bind", default=None, help="Listener address [default: the folder's last one, else 127.0.0.1].")
@click.option("--json", "as_json", is_flag=True, help="Print the paths written as JSON.")
def config(folder: Path | None, port: int | None, bind: str | None, as_json: bool) -> None:
    """Write passwd, acl, mosquitto.conf and a systemd drop-in for the broker, and reload it if it runs.

    Each device may publish only under its own dt/<fleet>/<id>/ and read only its own cmd/<fleet>/<id>/;
    the fleet's own services use the account fleet-ops (secret in FLEET_HOME/ops.secret).

    \b
    Example:
      fleet broker config --port 8883 --bind 0.0.0.0
      mosquitto -c ~/.local/share/cityfleet/broker/mosquitto.conf
    """
    from fleet.broker import reload_broker, write_broker_files
    from fleet.registry import open_registry

    files = write_broker_files(open_registry(), folder, port=port, bind=bind)
    reloaded = reload_broker(files.folder)
    if as_json:
        out = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(files).items()}
        click.echo(json.dumps({**out, "reloaded": reloaded}, indent=1, sort_keys=True))
        return
    click.echo("wrote broker files for %d device(s) to %s (listener %s:%d)"
               % (files.devices, files.folder, files.bind, files.port))
    click.echo("  config:  %s" % files.conf)
    click.echo("  passwd:  %s" % files.passwd)
    click.echo("  acl:     %s" % files.acl)
    click.echo("  systemd: %s (LimitNOFILE; copy to /etc/systemd/system/mosquitto.service.d/)" % files.dropin)
    click.echo("broker reloaded" if reloaded else "start it with: mosquitto -c %s" % files.conf)
