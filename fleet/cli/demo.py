"""`fleet demo`: the whole system on this machine, with the live watch view, until Ctrl-C or --duration."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click

#: Seconds between two storms on a board once the first has played out.
PAUSE_S = 30.0


@click.command()
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Fleet home for the demo (default: a temporary folder, removed at the end).")
@click.option("--duration", type=click.FloatRange(10, None), default=None,
              help="Stop after this many seconds of storms (default: run until Ctrl-C).")
@click.option("--heap", default=None, help="The boards' MicroPython heap, e.g. 110k (default: the emulator's).")
@click.option("--no-watch", is_flag=True, help="Print the event feed line by line instead of the live view.")
@click.option("--json", "as_json", is_flag=True, help="At the end, print what happened as JSON (implies --no-watch).")
def demo(home: Path | None, duration: float | None, heap: str | None, no_watch: bool, as_json: bool) -> None:
    """Run a broker, three emulated boards (one of each kind) provisioned with `fleet provision`, the
    ingest, and a rainstorm, a typhoon and a lifted manhole cover, shown live as `fleet watch` shows it.

    While it runs, other commands work on the demo's fleet: FLEET_HOME=<the home it prints> fleet alarms.
    """
    from fleet.demo import DemoSite

    temporary = home is None
    home = Path(tempfile.mkdtemp(prefix="fleet-demo-")) if home is None else home
    home.mkdir(parents=True, exist_ok=True)
    quiet = no_watch or as_json
    say = (lambda text: None) if as_json else (lambda text: click.echo("demo: " + text))
    say("fleet home %s (FLEET_HOME=%s fleet alarms, in another terminal)" % (home, home))
    site = DemoSite(home, heap=heap, log=say)
    try:
        site.start()
        summary = _run(site, duration, quiet, say)
    except KeyboardInterrupt:
        summary = None
    finally:
        site.stop()
        if temporary:
            shutil.rmtree(home, ignore_errors=True)
    if as_json and summary is not None:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
    elif summary is not None:
        say("ended: %d alarms raised, %d cleared, %d readings stored"
            % (summary["raised"], summary["cleared"], summary["readings"]))


def _run(site: Any, duration: float | None, quiet: bool, say: Any) -> dict[str, Any]:
    """Play the storms (again when they end) until `duration`; return what the store holds then."""
    from fleet.store import open_store

    store = open_store(home=site.home)
    try:
        cycle = site.scenario_seconds() + PAUSE_S
        started = time.monotonic()
        next_play = started
        view = None if quiet else _live_view(site, store)
        after = 0
        try:
            while duration is None or time.monotonic() - started < duration:
                if time.monotonic() >= next_play:
                    site.play()
                    say("storms: %s" % ", ".join("%s on %s" % (n.scenario, n.kind) for n in site.nodes))
                    next_play += cycle
                if view is not None:
                    view.refresh()
                else:
                    for item in store.feed(after_id=after):
                        after = item.id
                        say("%s %-13s %s" % (time.strftime("%H:%M:%S", time.localtime(item.time)),
                                             item.device, item.text))
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            if view is not None:
                view.close()
        return _summary(store, site)
    finally:
        store.close()


def _live_view(site: Any, store: Any) -> Any:
    from fleet.cli.watch import LiveWatch

    return LiveWatch(store, home=site.home)


def _summary(store: Any, site: Any) -> dict[str, Any]:
    alarms = store.alarms()
    readings = sum(len(store.readings(device)) for device in site.devices.values())
    return {
        "devices": dict(site.devices),
        "raised": len(alarms),
        "cleared": sum(1 for a in alarms if a.cleared_at is not None),
        "alarms": [{"device": a.device, "alarm": a.alarm, "source": a.source, "cleared": a.cleared_at is not None}
                   for a in alarms],
        "readings": readings,
    }
