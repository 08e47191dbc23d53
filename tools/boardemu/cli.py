"""`boardemu`: start, stop, reset, power-cut and drive emulated boards from the shell.

    boardemu start --kind water-level --dir boards/b1       # prints the serial port (boards/b1/tty)
    boardemu status --dir boards/b1
    boardemu set --dir boards/b1 level_cm=35 battery_v=3.6
    boardemu power --dir boards/b1 cut
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tools.boardemu import BoardEmuError
from tools.boardemu.api import EmulatedBoard
from tools.boardemu.boardconf import KINDS

_DIR = click.option("--dir", "state_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                    help="The board's folder: its flash, identity and hardware settings.")


@click.group()
def cli() -> None:
    """Emulated MicroPython boards: a real VM behind a serial port, with emulated sensors."""


@cli.command()
@click.option("--kind", type=click.Choice(KINDS), help="Board kind (required for a new board).")
@_DIR
@click.option("--baud", type=int, help="Serial speed; the link is paced to it (default 115200).")
@click.option("--heap", help="VM heap, like 110k (default: an ESP32 without PSRAM).")
@click.option("--rfc2217-port", type=int, help="Also serve the port as rfc2217://127.0.0.1:N (0: any free port).")
@click.option("--flash-size", help="Filesystem size of a new board, like 2M.")
def start(kind, state_dir, baud, heap, rfc2217_port, flash_size) -> None:
    """Bring the board up and print its serial port; the same DIR is the same board."""
    board = EmulatedBoard.start(kind, state_dir, baud=baud, heap=heap, rfc2217_port=rfc2217_port,
                                flash_size=flash_size)
    click.echo(board.port)
    if board.rfc2217_url:
        click.echo(board.rfc2217_url)


@cli.command()
@_DIR
def stop(state_dir) -> None:
    """Switch the board off and end its host process."""
    EmulatedBoard(state_dir).stop()


@cli.command()
@_DIR
def reset(state_dir) -> None:
    """Hard reset, as the EN button does."""
    EmulatedBoard(state_dir).reset()


@cli.command()
@_DIR
@click.argument("action", type=click.Choice(["cut", "on"]))
def power(state_dir, action) -> None:
    """Cut the power (the VM dies at once, flash writes tear) or turn it back on."""
    board = EmulatedBoard(state_dir)
    if action == "cut":
        board.power_cut()
    else:
        board.power_on()


@cli.command()
@_DIR
@click.argument("action", type=click.Choice(["unplug", "plug"]))
def serial(state_dir, action) -> None:
    """Pull or plug the USB cable: the serial port disappears or comes back."""
    board = EmulatedBoard(state_dir)
    if action == "unplug":
        board.unplug()
    else:
        board.plug()
        click.echo(board.port)


@cli.command()
@_DIR
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON.")
def status(state_dir, as_json) -> None:
    """Running or not, uptime, resets and their causes, serial port, physical values."""
    info = EmulatedBoard(state_dir).status()
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    serial_info = info["serial"]
    uptime = "-" if info["uptime_s"] is None else "%.1f s" % info["uptime_s"]
    click.echo("board     %s %s, %s, up %s" % (info["kind"], info["uid"], info["state"], uptime))
    click.echo("resets    %d, last %s; %s" % (info["reset_count"], info["last_reset_cause"],
                                              ", ".join("%s %d" % kv for kv in sorted(info["reset_causes"].items()))))
    click.echo("serial    %s" % ("%s -> %s at %d baud%s" % (serial_info["port"], serial_info["device"], serial_info["baud"],
                                                             ", open" if serial_info["open"] else "")
                                 if serial_info["plugged"] else "unplugged"))
    if info["rfc2217"]:
        click.echo("rfc2217   rfc2217://127.0.0.1:%d" % info["rfc2217"]["port"])
    click.echo("repl      %s" % info["repl"])
    click.echo("hardware  %s" % json.dumps(info["hardware"], sort_keys=True))


@cli.command("set")
@_DIR
@click.argument("assignments", nargs=-1, required=True)
def set_values(state_dir, assignments) -> None:
    """Set physical quantities: NAME=VALUE ... (tilt_deg=12 level_cm=35 wind_mps=28 battery_v=3.6)."""
    values = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise BoardEmuError("%r is not NAME=VALUE: write it like level_cm=35" % item)
        values[name.strip()] = value.strip()
    EmulatedBoard(state_dir).set(values)


@cli.command()
@_DIR
@click.argument("scenario")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Times real time.")
def play(state_dir, scenario, speed) -> None:
    """Play a scenario (a JSON file or a shipped name) in the background."""
    EmulatedBoard(state_dir).play(scenario, speed)


@cli.command()
@_DIR
@click.argument("action", type=click.Choice(["up", "down"]))
def net(state_dir, action) -> None:
    """Cut (down) or restore (up) the board's network link."""
    EmulatedBoard(state_dir).net(action == "up")


def main(argv=None) -> int:
    """Console entry point: user errors print one line `boardemu: ...` and exit 1."""
    try:
        cli.main(args=argv, prog_name="boardemu", standalone_mode=False)
    except BoardEmuError as exc:
        click.echo("boardemu: %s" % exc, err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("boardemu: aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0
