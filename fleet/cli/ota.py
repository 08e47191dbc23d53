"""`fleet ota keygen|release|releases`: release keys and signed releases (the campaign commands join them)."""

from __future__ import annotations

import json
from pathlib import Path

import click

COLUMNS = ("seq", "version", "board", "files", "bytes", "compressed", "key_id", "status", "notes")


@click.group("ota")
def ota() -> None:
    """Over-the-air updates: release keys, signed releases."""


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
