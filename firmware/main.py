# main.py: start the agent from the active app slot. Never updated over the air, so it stays tiny.
# The app lives in /app/a or /app/b; /app/active names the one to run (fleet flash and OTA switch it
# last, atomically). No slot: say so and stay at the REPL. An unprovisioned board stays at the REPL for
# the technician; any other failure is printed and the board resets after a pause, so a transient
# fault never leaves it dead.
# Updates (agent/ota*.py, boot.py): a release on trial (/app/trial) resets at once on any failure
# (boot.py counts its boots) and must confirm itself within _TRIAL_S, else the trial is marked expired
# and the board reset: boot.py rolls it back. A confirmed slot's crashes count in /app/crashes (boot.py
# adds watchdog resets), cleared once its agent ran _UP_S; from _CRASHES on, the agent starts in safe
# mode (network, reports and OTA, no sensor) until a new release is installed or the power cycles.
# An update runs instead of the agent when /app/step says so: update mode (agent/ota_mode.py), the
# network and the update alone, on a heap of their own; the board restarts after it.
import sys
import time

import board

_APP = "/app"
_CRASHES = 4
_UP_S = 300
_TRIAL_S = 900
_PAUSE = 10  # s before a crashed agent's reset (Ctrl-C: stay at the REPL); 2 at most on trial


def _read(name):
    try:
        with open(_APP + "/" + name) as f:
            return f.read().split()
    except OSError:
        return []


def _put(name, text):
    import os

    with open(_APP + "/" + name + ".new", "w") as f:
        f.write(text)
    os.rename(_APP + "/" + name + ".new", _APP + "/" + name)


async def _watch(trial, safe):
    # Runs beside the agent, in its event loop.
    import asyncio
    import os

    await asyncio.sleep(_UP_S)
    if not (safe or trial) and _read("crashes"):
        os.remove(_APP + "/crashes")  # up long enough: not a crash loop
    if trial:
        await asyncio.sleep(_TRIAL_S - _UP_S)
        now = _read("trial")
        if now[:1] == trial[:1] and now[3:4] == trial[3:4]:  # still this trial: it never confirmed
            now[2] = "expired"
            _put("trial", " ".join(now))
            board.Board().reset()


def _start(trial, safe):
    stop = KeyboardInterrupt
    try:
        if not trial:  # a release on trial never waits at the REPL: it resets and boot.py counts it
            from agent.errors import AgentError

            stop = (KeyboardInterrupt, AgentError)
        import asyncio

        from agent import app

        unit = board.Board()
        if safe:
            print("agent: safe mode after %s crashes: network and updates only" % _read("crashes")[0])
            unit.safe = True
        asyncio.create_task(_watch(trial, safe))
        app.main(unit)
    except stop as error:
        print("agent:", "stopped" if isinstance(error, KeyboardInterrupt) else error)
        return
    except Exception as error:
        sys.print_exception(error)
        if not trial:
            crashes = _read("crashes")
            _put("crashes", str(int(crashes[0]) + 1 if crashes and crashes[0].isdigit() else 1))
        pause = min(2, _PAUSE) if trial else _PAUSE
        print("agent: crashed; resetting in %d s (Ctrl-C to stay at the REPL)" % pause)
        time.sleep(pause)
        board.Board().reset()


def _step():
    try:
        from agent import ota_mode

        ota_mode.run(board.Board())
    except Exception as error:  # the update ends (agent/ota_offer.py reports it); the agent must start
        sys.print_exception(error)
    import os

    os.remove(_APP + "/step")
    board.Board().reset()


_app = _read("active")
if not _app or _app[0] not in ("a", "b"):
    print("agent: no app installed; run fleet flash")
else:
    sys.path.insert(0, _APP + "/" + _app[0])  # first: the slot's agent and protocols, before anything else
    if _read("step"):
        _step()
    _trial = _read("trial")
    _crashes = _read("crashes")
    del _step  # the agent's heap is small: keep only what runs beside it
    _start(_trial, not _trial and _crashes[:1] != [] and _crashes[0].isdigit() and int(_crashes[0]) >= _CRASHES)
