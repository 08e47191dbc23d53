"""`fleet build`: the agent bundle for a board."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fleet.errors import FleetError


@click.command("build")
@click.option("--board", type=click.Choice(["esp32", "emulator"]), default="esp32", show_default=True,
              help="Board the bundle is for.")
@click.option("--version", "version", default=None, help="Version written to the manifest [default: the package's].")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write [default: build/bundle-<board>].")
@click.option("--trust", "trust", multiple=True, metavar="KEY.pub",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Public release key (from `fleet ota keygen`) whose OTA releases the bundle accepts; "
                   "repeatable. Written to trust.cbor.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def build(board: str, version: str | None, output: Path | None, trust: tuple[Path, ...], as_json: bool) -> None:
    """Build the agent bundle: .mpy modules, boot.py, main.py, board.py and manifest.json.

    The same sources give the same bytes, so a bundle can be rebuilt and compared. Without --trust a
    board running the bundle accepts no over-the-air update.

    \b
    Example:
      fleet build --board esp32 --version 1.4.2 --trust keys/release.pub -o build/agent-1.4.2
    """
    from firmware.build import BuildError, build_bundle
    from fleet import __version__

    out = output or Path("build") / ("bundle-" + board)
    keys: list[bytes] = []
    if trust:
        from fleet.ota.keys import load_public_key

        keys = list(dict.fromkeys(load_public_key(path) for path in trust))  # once each, in the given order
    try:
        manifest = build_bundle(board, version or __version__, out, keys)
    except BuildError as error:
        raise FleetError(str(error)) from None
    if as_json:
        click.echo(json.dumps(manifest, indent=1, sort_keys=True))
        return
    total = sum(entry["size"] for entry in manifest["files"])
    click.echo("built %s bundle %s: %d files, %d bytes, .mpy v%s, %d trusted release key%s -> %s"
               % (board, manifest["version"], len(manifest["files"]), total, manifest["mpy"], len(keys),
                  "" if len(keys) == 1 else "s", out))
