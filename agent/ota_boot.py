"""After an update's restart: the new release confirms itself (or boot.py has rolled it back).

On every connect (broker reached, birth published) the agent calls `connected()`:

- /app/rollback (firmware/boot.py went back to this slot): the update is closed as rolled back with
  boot.py's reason (CRASHED: it kept crashing; TRIAL_FAILED: it never confirmed in time) and reported;
  its offer, which comes again on every connect while the fleet waits for the outcome, is answered
  with it again.
- /app/trial naming the running slot: once the sensor has given values too (the health check: broker,
  birth, sensors), the trial file is removed (the release is confirmed: boot.py leaves it alone from
  then on) and progress done is reported with the new version.

`Idle` is the sensor of safe mode (firmware/main.py, after repeated crashes): it reads nothing, so only
the network, reports and OTA run until a new release is installed. Loaded per call; self-contained (the
state file's format is agent/ota_state.py's), as a running agent has a few KB to spare.
"""

import asyncio
import json
import os

from agent import flashio
from agent.errors import SensorFault
from agent.sensing import Sensor
from protocols import up_status


async def connected(agent):
    """See the module docstring. Never raises: a session must not fail over an update's files."""
    try:
        await _connected(agent, getattr(agent, "app_dir", "/app"))
    except Exception as error:  # noqa: BLE001 - e.g. a file from an older release in another format
        print("ota: %r" % (error,))


async def _connected(agent, app):
    back = _words(app + "/rollback")
    if back is not None:
        # The outcome is written before the file goes: a power cut between the two reports it twice
        # (the fleet drops the second), never as an update that did not finish.
        rolled = len(back) > 2 and back[1].isdigit()  # "reason cid version" (firmware/boot.py)
        if rolled:
            _record(app, int(back[1]), 6, back[0], " ".join(back[2:]))  # rolled back
        os.remove(app + "/rollback")
        if rolled:
            await _report(agent, int(back[1]), 6, back[0], " ".join(back[2:]))
    trial = _words(app + "/trial")
    active = _words(app + "/active")
    if trial is not None and len(trial) > 3 and active and trial[0] == active[0] and trial[3].isdigit() \
            and agent.commands.ota is None:
        if agent.sensor.values():
            await _confirm(agent, app, trial)  # nearly always: the sensor was read before the session came up
        else:
            agent.commands.ota = trial
            asyncio.create_task(_confirm(agent, app, trial))


async def _confirm(agent, app, trial):
    while not agent.sensor.values():
        await asyncio.sleep(1)
    cid, target = int(trial[3]), " ".join(trial[4:])
    _record(app, cid, 4, None, target)  # done, first: see _connected
    os.remove(app + "/trial")  # confirmed: firmware/boot.py no longer counts its boots
    agent.commands.ota = None
    # a report the broker does not take is kept in the outbox (agent/app.py publish_now), and the
    # outcome is sent again when the offer comes back (agent/ota_offer.py)
    await _report(agent, cid, 4, None, target)


def _record(app, cid, final, reason, target):
    # the update's outcome into /app/ota (agent/ota_state.py close)
    flashio.write(app + "/ota", json.dumps({"closed": cid, "end": [final, reason, target]}).encode())


async def _report(agent, cid, final, reason, target):
    seq = agent.sequence
    n = seq.next()
    await agent.publish_now("ota", up_status.ota_progress(seq.boot, n, cid, final, None, reason, target), n)


def _words(path):
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return None


class Idle(Sensor):
    """Safe mode's sensor: nothing is read (the kind's code may be what crashed)."""

    FAST_MS = SLOW_MS = 10000

    def setup(self):
        raise SensorFault("safe_mode")  # health reports it as the sensor's fault

    def sample(self, now_ms):
        pass
