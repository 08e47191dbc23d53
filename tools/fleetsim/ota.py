"""The agent's side of an update on a simulated device, on the wire (SPEC.md "OTA on the device").

- An offer, in the running agent (agent/ota_offer.py): a cid already closed gets its outcome again; after
  an update's restart nothing is taken (the confirmation or rollback is settled first); the release the
  device runs is reported done, an older one refused (DOWNGRADE), an envelope too big refused
  (BAD_MANIFEST). Otherwise it is taken: 1 downloading 0 %, and the agent restarts (agent/app.py
  `reboot`: a second for the report to leave, then a reset, so the broker publishes the will).
- Update mode (tools/fleetsim/update.py) is a boot of its own: a new boot id, a birth naming the release
  it still runs, pulls and live reports. It ends with a DISCONNECT (no will) and a restart.
- After it, on trial: a new boot whose birth names the new version, which confirms itself at once (the
  sensor has values) and reports 4 done. A release that crashes (behaviour ROLLS_BACK) never gets a
  session: three trial boots crash, then boot.py goes back, and the previous release's agent births with
  the old version and reports 6 rolled back CRASHED. After a failure, the agent it ran before.
- Reports of the running agent are published at once; one the broker does not take goes to the outbox
  (agent/app.py `publish_now`). Update mode's are live only.

Each restart takes `Settings.ota_boot_s` (from the reset to the next connection attempt).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from protocols.ota import DONE, DOWNLOADING, FAILED, ROLLED_BACK
from tools.fleetsim.device import AGENT, UPDATE_MODE
from tools.fleetsim.items import OTA
from tools.fleetsim.update import CUTS, NO_SPACE, ROLLS_BACK, WORKS, Update

REBOOT_WAIT_S = 1.0  # agent/app.py reboot: a second for the last report to leave
TRIAL_CRASHES = 3  # firmware/boot.py: the new release has 3 boots to confirm itself
MAX_ENVELOPE = 16512  # agent/ota_offer.py _MAX_ENVELOPE
STATE_NAMES = {DONE: "done", FAILED: "failed", ROLLED_BACK: "rolled_back"}


def behaviour(rnd: random.Random, settings: Any) -> int:
    """What a device will do with the updates it takes: roll back, run out of flash, lose its link once
    mid-download (and resume), or work; drawn with the shares of `settings`."""
    draw = rnd.random()
    for kind, share in ((ROLLS_BACK, settings.ota_rollback_share), (NO_SPACE, settings.ota_fail_share),
                        (CUTS, settings.ota_cut_share)):
        if draw < share:
            return kind
        draw -= share
    return WORKS


class OtaSide:
    """One device's updates, made at its first offer: the offer being taken (until the restart), the
    update under way in update mode, the outcome its next boot reports, and the last update closed
    (cid, state, reason, target), as /app/ota keeps it."""

    __slots__ = ("taken", "update", "settle", "closed")

    def __init__(self) -> None:
        self.taken: Any = None
        self.update: Update | None = None
        self.settle: tuple[int, int, str | None, str] | None = None
        self.closed: tuple[int, int, str | None, str] | None = None


def on_offer(dev: Any, offer: Any | None) -> None:
    """An offer (protocols.ota.OtaOffer) on the device's offer topic; None: the fleet cleared it."""
    side = dev.ota
    if side is None:
        side = dev.ota = OtaSide()
    ledger = dev.ledger.ota_entry(dev.firmware.version)
    if offer is not None:
        ledger.offers += 1
        ledger.cancels += 1 if offer.cancel else 0
    if dev.mode == UPDATE_MODE:
        if side.update is not None:
            side.update.offer_again(offer)
        return
    if offer is None or side.settle is not None or side.taken is not None:
        return  # cleared; or an update's restart is under way or not settled yet
    if side.closed is not None and side.closed[0] == offer.cid:
        if not offer.cancel:
            report(dev, *side.closed)  # its outcome again: the fleet may have missed it
        return
    running = dev.firmware.release
    if offer.cancel:
        return
    if offer.release == running:
        outcome(dev, offer.cid, DONE, None, offer.firmware, close=False)
    elif offer.release < running:
        outcome(dev, offer.cid, FAILED, "DOWNGRADE", offer.firmware)
    elif offer.size > MAX_ENVELOPE:
        outcome(dev, offer.cid, FAILED, "BAD_MANIFEST", offer.firmware)
    else:
        side.taken = offer
        ledger.taken.append(offer.cid)
        report(dev, offer.cid, DOWNLOADING, None, offer.firmware, 0)
        dev.ctx.spawn(_into_update_mode(dev, offer))


def on_session(dev: Any) -> None:
    """A session is up (birth published, commands subscribed): update mode pulls again; after an update's
    restart, its outcome is reported."""
    side = dev.ota
    if side is None:
        return
    if dev.mode == UPDATE_MODE and side.update is not None:
        side.update.session_up()
    elif side.settle is not None:
        settle, side.settle = side.settle, None
        outcome(dev, *settle)


def report(dev: Any, cid: int, state: int, reason: str | None, target: str, percent: int | None = None) -> None:
    """A progress report of the running agent: at once, or kept in the outbox (agent/app.py publish_now)."""
    from protocols import up_status

    seq = dev.next_seq()
    dev.live(OTA, seq, up_status.ota_progress(dev.boot, seq, cid, state, percent, reason, target))


def outcome(dev: Any, cid: int, state: int, reason: str | None, target: str, close: bool = True) -> None:
    """Update `cid` ended in `state`: closed (its outcome reported again to each offer of it), written in
    the ledger and reported."""
    if close:
        dev.ota.closed = (cid, state, reason, target)
    dev.ledger.ota.outcome = {"cid": cid, "state": STATE_NAMES[state], "reason": reason, "target": target}
    report(dev, cid, state, reason, target)


async def _into_update_mode(dev: Any, offer: Any) -> None:
    side = dev.ota
    await asyncio.sleep(REBOOT_WAIT_S)
    if not await dev.shut_down(clean=False):
        return
    await asyncio.sleep(dev.ctx.settings.ota_boot_s)
    if not dev.rebooting():
        return  # the run is ending
    dev.new_boot()
    side.taken = None
    dev.ledger.ota.restarts += 1
    dev.mode = UPDATE_MODE
    side.update = Update(dev, offer, lambda reason: _update_ended(dev, reason))
    await dev.connect()


def _update_ended(dev: Any, reason: str | None) -> None:
    """Update mode is over (Update.finish reported it): restart into what comes next."""
    side = dev.ota
    update = side.update
    offer = update.offer
    boot_s = dev.ctx.settings.ota_boot_s
    firmware, down = dev.firmware, boot_s
    settle: tuple[int, int, str | None, str] | None = None
    if reason is not None:
        side.closed = (offer.cid, FAILED, reason, offer.firmware)
        dev.ledger.ota.outcome = {"cid": offer.cid, "state": "failed", "reason": reason, "target": offer.firmware}
    elif dev.behaviour == ROLLS_BACK:  # it never gets a session: three boots crash, boot.py goes back
        settle, down = (offer.cid, ROLLED_BACK, "CRASHED", offer.firmware), boot_s * (1 + TRIAL_CRASHES)
    else:
        firmware = dev.ctx.catalogue.installed(update.manifest, dev.firmware)
        settle = (offer.cid, DONE, None, offer.firmware)
    dev.ctx.spawn(_out_of_update_mode(dev, firmware, settle, down))


async def _out_of_update_mode(dev: Any, firmware: Any, settle: Any, down: float) -> None:
    if not await dev.shut_down(clean=True):
        return
    await asyncio.sleep(down)
    if not dev.rebooting():
        return
    dev.new_boot()
    side = dev.ota
    side.update = None
    side.settle = settle
    dev.mode = AGENT
    dev.firmware = firmware
    dev.ledger.ota.firmware = firmware.version
    dev.ledger.ota.restarts += 1
    await dev.connect()
