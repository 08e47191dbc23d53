"""Update mode: the board runs the network and one update, nothing else (SPEC.md "OTA").

A running agent leaves a few KB of heap: not enough to pull files beside it, check an Ed25519 signature
over a manifest, or inflate files. So when the agent takes an offer (agent/ota_offer.py) it leaves
/app/step ("update") and restarts, and firmware/main.py runs `run()` instead of the agent, on a heap of
its own. Sensors are not read meanwhile (a minute on a good link, IDLE_S at most without one).

`Node` is the agent's session cut down to what an update needs: the identity, the boot id and sequence,
one MQTT session (agent/link.py) with a birth and the will, and the commands it gets (chunks, offers).
The update, from where its files on flash left it (a power cut in update mode starts it again):

1. the signed envelope (file index 0) into the inactive slot, then its checks (agent/ota_check.py:
   hash, signature, manifest, release seq, board, `.mpy` version, free flash);
2. each file the running slot lacks, in its compressed form (`<path>.z`), progress every 10 %;
3. the install (agent/ota_install.py: inflated, copied, checked; manifest.json, /app/trial, /app/active
   switched last).

Then the board restarts: into the new release on trial (reported staged; firmware/boot.py and
agent/ota_boot.py), or after
a failure (closed with its reason in /app/ota, reported here and again to each offer of it) into the
agent it ran before.
"""

import asyncio
import json
from binascii import unhexlify

from agent import flashio, tls_context
from agent import ota_state as st
from agent.errors import AgentError
from agent.ota_fetch import Failed, Fetch
from protocols import up_status

DATA = "/data"  # agent/app.py DATA
_KINDS = {"manhole-tilt": "manhole", "water-level": "water", "wind-load": "billboard"}  # agent/connected.py KIND_NAMES
_RESETS = {"power_on": 1, "hard": 2, "wdt": 3, "deepsleep": 4, "soft": 5}  # agent/startup.py RESET_CODES


class Node:
    """One MQTT session for the update: `sequence`, `publish_now()`; the download under way in `ota`."""

    def __init__(self, board, ident, data=DATA):
        from agent.link import Link
        from agent.sequence import Sequence

        self.board = board
        self.id = ident
        self.sequence = Sequence(data + "/seq")  # a boot like any other: a new boot id
        try:
            self.config = int(json.loads(flashio.read(data + "/config.json")).get("2", 0))
        except (TypeError, ValueError, AttributeError):
            self.config = 0
        self.ota = None
        self.link = Link(board, ident.host, ident.port, ident.client_id, keepalive=60, user=ident.user,
                         password=ident.password, will=self._will, on_connect=self._connected,
                         on_message=self._message, backoff=ident.backoff, stable_s=ident.stable_s,
                         tls=tls_context.for_link(ident))

    def _topic(self, kind):
        return "dt/%s/%s/%s" % (self.id.fleet, self.id.device, kind)

    def _will(self):
        return self._topic("state"), up_status.state(self.sequence.boot, self.sequence.next(), False), 1, True

    async def _connected(self, client):
        # As the agent does (agent/connected.py): the retained birth (its release still), then the commands.
        seq = self.sequence
        birth = up_status.state(seq.boot, seq.next(), True, self.id.firmware, self.config,
                                _RESETS.get(self.board.reset_cause(), 0), _KINDS.get(self.id.kind))
        await client.wait_ack(await client.publish(self._topic("state"), birth, 1, True))
        await client.subscribe("cmd/%s/%s/+" % (self.id.fleet, self.id.device), 1)
        if self.ota is not None:
            self.ota.poke()

    def _message(self, topic, payload, retained):
        kind = bytes(topic).rsplit(b"/", 1)[-1]
        if self.ota is None:
            return
        if kind == b"chunk":
            self.ota.chunk(payload)
        elif kind == b"ota":
            self.ota.again(bytes(payload))

    async def publish_now(self, kind, payload):
        """Publish a live message when a session is up; True once the broker has it."""
        client = self.link.client
        if client is None:
            return False
        try:
            return await client.wait_ack(await client.publish(self._topic(kind), payload, 1))
        except AgentError:
            return False


def run(board, app=st.APP, data=DATA, mpy=None):
    """Update mode (firmware/main.py, which then removes /app/step and restarts): the update /app/ota
    names, from where it stopped."""
    from agent import identity

    asyncio.run(update(Node(board, identity.load(), data), app, mpy))


async def update(node, app, mpy=None):
    """Carry out the update of the state in `app` with `node`'s session; its outcome stays in the state."""
    state = st.load(app)
    offer = state.get("offer")
    trial = st.words(app + "/trial")
    if trial and trial[0] == st.slots(app)[0][-1]:  # cut after the switch: done, the restart is on trial
        state["phase"] = "staged"
        st.save(app, state)
    if state.get("phase") != "update" or not offer:
        return
    state["ran"] = True  # should this end without an outcome (a crash), the agent closes it as failed
    st.save(app, state)
    asyncio.create_task(node.link.run())
    fetch = node.ota = Fetch(node, state["cid"], offer[3])
    try:
        reason = await _update(node, fetch, app, state, offer, mpy)
    except Failed as failure:
        reason = str(failure)
    except Exception as error:  # noqa: BLE001 - any failure ends the update, reported
        print("ota: update failed: %r" % (error,))
        reason = "TRANSFER_FAILED"
    node.ota = None
    if reason is not None:
        st.remove(st.slots(app)[1])
        st.close(app, state, state["cid"], st.FAILED, reason, offer[3])
        await fetch.report(st.FAILED, None, reason)
    await node.link.stop()


async def _update(node, fetch, app, state, offer, mpy):
    from agent import ota_check

    active, new = st.slots(app)
    st.mkdirs(new)
    await fetch.pull([(0, "release.cbor", offer[1])], new)
    await fetch.report(st.VERIFYING)
    plan = ota_check.check(new + "/release.cbor", offer[1], unhexlify(offer[2]), active, new, node.board.NAME, mpy)
    if isinstance(plan, str):
        return plan
    for _, path, _, _, _ in plan.pulls:
        st.mkdirs((new + "/" + path).rsplit("/", 1)[0])
    await fetch.pull([(index, path + ".z", zsize) for index, path, zsize, _, _ in plan.pulls], new, True)
    from agent import ota_install

    reason = ota_install.install(new + "/release.cbor", active, new, app, state["cid"])
    if reason is None:  # switched: the restart is into the new release, on trial; it reports done
        state["phase"] = "staged"
        st.save(app, state)
        await fetch.report(st.STAGED)
    return reason
