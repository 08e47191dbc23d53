"""Over-the-air updates on the node (SPEC.md "OTA"): the entry points the agent calls, each through
agent.transient, so none of this code stays in the heap.

- `offer(agent, payload)`: an offer on `cmd/…/ota` (agent/ota_offer.py); returns a coroutine to await.
  An update it takes runs in update mode, at the next boot (firmware/main.py, agent/ota_mode.py): the
  network and the update alone, on a heap of their own, since a running agent leaves a few KB.
- `connected(agent)`: after each connect and birth: confirm a release on trial, report a rollback
  (agent/ota_boot.py); returns a coroutine to await.
- `idle_sensor()`: the sensor of safe mode (firmware/main.py sets `board.safe` after repeated crashes).

The coroutines run with the room agent.transient keeps for per-call code given to them. The files and
their layout: agent/ota_state.py; the trial boots and the rollback: firmware/boot.py.
"""

from agent import transient


def offer(agent, payload):
    """Act on an OTA offer (empty: the fleet cleared it)."""
    from agent import ota_offer

    return _roomy(ota_offer.handle(agent, payload))


async def _roomy(coroutine):
    # The coroutine a transient call returns runs after the call, when the room agent.transient keeps
    # for per-call code is held again: it gets the room while it runs.
    transient.call(transient.hold, 0)
    try:
        return await coroutine
    finally:
        from agent.app import ROOM

        transient.hold(ROOM)


async def _nothing():
    return None


def connected(agent):
    """The OTA duties of a new session: confirmation of a release on trial, a rollback reported."""
    import os

    try:
        names = os.listdir(getattr(agent, "app_dir", "/app"))
    except OSError:
        names = ()
    if "trial" not in names and "rollback" not in names:
        return _nothing()  # nearly always: nothing more to load
    from agent import ota_boot

    return _roomy(ota_boot.connected(agent))


def idle_sensor():
    """A sensor that reads nothing, for safe mode."""
    from agent import ota_boot

    return ota_boot.Idle()
