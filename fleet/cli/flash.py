"""`fleet flash` puts the agent on a board over serial; `fleet console` opens the board's REPL."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fleet.errors import FleetError

if TYPE_CHECKING:
    from fleet.flash import Bundle

PORT_HELP = "Serial port: a device path (/dev/ttyUSB0) or a pyserial URL (rfc2217://host:port, socket://host:port)."


@click.command("flash")
@click.option("--port", required=True, help=PORT_HELP)
@click.option("--baud", type=int, default=115200, show_default=True, help="Serial speed of the board's REPL.")
@click.option("--board", type=click.Choice(["esp32", "emulator"]), default=None,
              help="Board to build for [default: the board's own, from its sys.platform].")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Flash this bundle (from `fleet build`) instead of building one.")
@click.option("--base-firmware", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="First write this MicroPython firmware image to an ESP32 with esptool.")
@click.option("--erase", is_flag=True, help="With --base-firmware: erase the whole flash first (files too).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def flash(port: str, baud: int, board: str | None, bundle_dir: Path | None, base_firmware: Path | None,
          erase: bool, as_json: bool) -> None:
    """Put the agent bundle on the board at PORT, sending only what changed.

    The new app goes to the board's inactive slot (/app/a or /app/b); files it already holds are kept
    or copied on the board, the rest are sent, each to a temporary name, checked by SHA-256 and
    renamed. /app/active switches to the new slot only once every file is verified, so an interrupted
    flash leaves the old agent running; run the command again to finish. The board's /device.json
    (its identity) is never touched. Without --bundle the bundle is built for the board found on PORT
    (sys.platform 'esp32' -> esp32, 'linux' -> emulator).

    \b
    Examples:
      fleet flash --port /dev/ttyUSB0
      fleet flash --port /dev/ttyUSB0 --base-firmware ESP32_GENERIC-v1.29.0.bin --erase
      fleet flash --port rfc2217://127.0.0.1:4000 --bundle build/agent-1.4.2 --json
    """
    import tempfile

    from fleet import flash as flashing
    from fleet.board_session import BoardSession

    if erase and base_firmware is None:
        raise click.UsageError("--erase goes with --base-firmware")
    bundle = flashing.Bundle(bundle_dir) if bundle_dir is not None else None  # checked before any write
    if bundle is not None and board is not None and bundle.board != board:
        raise FleetError("--bundle %s is for %s, not --board %s" % (bundle_dir, bundle.board, board))
    if base_firmware is not None:
        flashing.write_base_firmware(port, base_firmware, erase)
    observer = _observer()
    with BoardSession.open(port, baud) as session, tempfile.TemporaryDirectory() as tmp:
        ident = session.identify()
        if bundle is None:
            bundle = _build(flashing.PLATFORM_BOARDS.get(ident["platform"]), board, Path(tmp) / "bundle", session)
        try:
            summary = flashing.flash(session, bundle, observer, ident)
        finally:
            observer.close()
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
    else:
        click.echo(_describe(summary))


def _build(detected: str | None, wanted: str | None, out: Path, session) -> Bundle:
    """Build the bundle for the board (restarting it when that fails, so it runs its agent again)."""
    from firmware.build import BuildError, build_bundle
    from fleet import __version__
    from fleet import flash as flashing

    try:
        if detected is None:
            raise FleetError("the board's platform is not one a bundle is built for (esp32, emulator)")
        if wanted is not None and wanted != detected:
            raise FleetError("--board %s, but the board on %s is %s" % (wanted, session.port, detected))
        try:
            build_bundle(detected, __version__, out)
        except BuildError as error:
            raise FleetError(str(error)) from None
        return flashing.Bundle(out)
    except FleetError:
        import contextlib

        with contextlib.suppress(FleetError):
            session.soft_reset()  # the agent runs again
        raise


def _describe(summary: dict) -> str:
    if summary["up_to_date"]:
        return ("board %s already runs %s bundle %s (slot %s); restarted it"
                % (summary["uid"], summary["board"], summary["version"], summary["slot"]))
    rate = ""
    if summary["bytes_per_second"]:
        rate = " (%d B/s, %.0f%% of the line rate)" % (summary["bytes_per_second"], 100 * summary["line_share"])
    return ("flashed %s bundle %s to board %s, slot %s%s: %d files sent, %d copied on the board, %d kept, "
            "%d removed; %d bytes sent in %.1f s%s, %.1f s in all; restarted"
            % (summary["board"], summary["version"], summary["uid"], summary["slot"],
               " (was %s)" % summary["previous_slot"] if summary["previous_slot"] else "",
               len(summary["sent"]), len(summary["copied"]), summary["kept"], len(summary["removed"]),
               summary["bytes_sent"], summary["send_seconds"], rate, summary["seconds"]))


def _observer():
    """Progress on stderr (stdout keeps the summary): a rich bar on a terminal, else a line a step and
    a line a file sent, for logs."""
    from fleet.flash import Observer

    class Lines(Observer):
        def stage(self, text: str) -> None:
            click.echo(text, err=True)

        def file_done(self, rel: str, action: str) -> None:
            if action == "sent":
                click.echo("  sent %s" % rel, err=True)

    class Bar(Observer):
        def __init__(self) -> None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TaskID,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.console = Console(stderr=True)
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=self.console)
            self.task: TaskID | None = None

        def stage(self, text: str) -> None:
            self.console.print(text)

        def sending(self, total_bytes: int) -> None:
            self.progress.start()
            self.task = self.progress.add_task("sending", total=total_bytes)

        def sent(self, nbytes: int) -> None:
            if self.task is not None:
                self.progress.advance(self.task, nbytes)

        def close(self) -> None:
            self.progress.stop()

    return Bar() if sys.stderr.isatty() else Lines()


@click.command("console")
@click.option("--port", required=True, help=PORT_HELP)
def console(port: str) -> None:
    """Open the board's REPL (mpremote's) for a technician; Ctrl-] or Ctrl-X leaves it.

    The agent keeps running: its output shows, Ctrl-C stops it, Ctrl-D restarts it (soft reset).

    \b
    Example:
      fleet console --port /dev/ttyUSB0
    """
    import subprocess

    from fleet.board_session import check_port

    check_port(port)
    code = subprocess.call([sys.executable, "-m", "mpremote", "connect", port, "repl"])
    if code != 0:
        raise FleetError("the console ended with an error (mpremote exit code %d)" % code)
