"""`fleet`: the entry point, the command groups and the one top-level error handler."""

from __future__ import annotations

import sys

import click

from fleet import __version__
from fleet.errors import EXIT_ERROR, EXIT_INTERRUPTED, FleetError

EPILOG = """\b
Exit codes: 0 ok, 1 a check failed, 2 wrong usage, 3 the command could not do its job.
Every option can also come from a FLEET_<OPTION> environment variable (for example FLEET_HOME).
"""


@click.group(epilog=EPILOG, context_settings={"auto_envvar_prefix": "FLEET", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet")
def cli() -> None:
    """Build, flash, provision, watch and update cityfleet sensor nodes."""


def _register() -> None:
    from fleet.cli.broker import broker
    from fleet.cli.build import build
    from fleet.cli.devices import device, devices
    from fleet.cli.flash import console, flash
    from fleet.cli.provision import provision, sync

    cli.add_command(build)
    cli.add_command(flash)
    cli.add_command(console)
    cli.add_command(devices)
    cli.add_command(device)
    cli.add_command(broker)
    cli.add_command(provision)
    cli.add_command(sync)

    from fleet.cli.ingest import ingest

    cli.add_command(ingest)

    from fleet.cli.commands import config, ping, reboot

    cli.add_command(ping)
    cli.add_command(reboot)
    cli.add_command(config)

    from fleet.cli.alarms import alarm, alarms
    from fleet.cli.health import health
    from fleet.cli.readings import readings, summary

    cli.add_command(alarms)
    cli.add_command(alarm)
    cli.add_command(health)
    cli.add_command(readings)
    cli.add_command(summary)

    from fleet.cli.watch import watch

    cli.add_command(watch)

    from fleet.cli.demo import demo

    cli.add_command(demo)

    from fleet.cli.ota import ota

    cli.add_command(ota)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one `fleet: <message>` line and a documented exit code."""
    try:
        cli.main(args=argv, prog_name="fleet", standalone_mode=False)
    except FleetError as error:
        click.echo("fleet: %s" % error, err=True)
        return error.exit_code
    except click.exceptions.Abort:
        click.echo("fleet: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except KeyboardInterrupt:
        click.echo("fleet: interrupted", err=True)
        return EXIT_INTERRUPTED
    except OSError as error:
        # Ports, files and sockets: say which and why, without a traceback.
        click.echo("fleet: %s" % error, err=True)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
