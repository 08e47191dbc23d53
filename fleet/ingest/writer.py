"""The ingest's batch writer: a bounded queue of decoded messages, written to the store in batches.

`on_message` (gmqtt's callback) decodes a message, queues it and returns only once the batch holding it is
committed, so the PUBACK follows the commit (fleet/ingest/service.py says why). One writer takes up to
`batch_max` messages, or what arrives within `batch_wait` seconds of the first, runs the fleet's threshold
check over them in arrival order and calls `store.ingest` in the store's own thread (one thread: an
SQLite connection belongs to the thread that opened it). A failed commit is retried with backoff, never
acknowledged: the database may be restarting, and an unacknowledged message is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fleet.ingest.decode import decode
from fleet.ingest.thresholds import Thresholds
from fleet.store.base import Store
from fleet.store.model import Batch, BatchResult, Inbound, Quarantined

log = logging.getLogger("fleet.ingest")

BATCH_MAX = 1000
BATCH_WAIT_S = 0.05
_POLL_S = 0.005  # how often a batch that is not full looks for more while it waits
QUARANTINE_LOG_LINES = 10  # per report interval; the rest are only counted (a flood must not flood the log)
_RETRY_MAX_S = 30.0
TICK_S = 1.0  # how often an idle writer lets the fleet's threshold check see time pass


class NotStored(Exception):
    """The service stopped before this message's batch was committed: no PUBACK, the broker resends it."""


@dataclass
class Counters:
    """Totals since start."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    readings: int = 0
    fleet_alarms: int = 0
    batches: int = 0


class BatchWriter:
    """The queue and the batch writer; `on_message` is gmqtt's callback."""

    def __init__(self, fleet: str, store: Store, executor: ThreadPoolExecutor, thresholds: Thresholds,
                 *, batch_max: int = BATCH_MAX, batch_wait: float = BATCH_WAIT_S, queue_max: int = 4 * BATCH_MAX,
                 clock: Callable[[], float] = time.time,
                 on_batch: Callable[[BatchWriter], None] | None = None) -> None:
        self.fleet = fleet
        self.store = store
        self.executor = executor
        self.thresholds = thresholds
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.clock = clock
        self.counters = Counters()
        self.on_batch = on_batch  # called after each committed batch (benchmarks, live views)
        self.first_at: float | None = None  # time.monotonic() of the first message received
        self.stopping = asyncio.Event()
        self._queue: asyncio.Queue[tuple[Inbound | Quarantined, asyncio.Future[None]]] = asyncio.Queue(queue_max)
        self._logged_quarantine = 0
        self._waiting: dict[asyncio.Task[Any], asyncio.Future[None]] = {}  # on_message calls not returned yet

    async def on_message(self, client: Any, topic: str | bytes, payload: bytes, qos: int, properties: Any) -> int:
        """Queue one message and return (so gmqtt sends the PUBACK) once its batch is committed."""
        item = decode(topic, payload, self.clock(), self.fleet)
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.counters.received += 1
        if isinstance(item, Quarantined) and self._logged_quarantine < QUARANTINE_LOG_LINES:
            self._logged_quarantine += 1
            log.warning("quarantined %s (%d bytes): %s: %s", item.topic, len(item.payload), item.reason, item.detail)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.current_task()
        if task is not None:
            self._waiting[task] = done
            # gmqtt added its PUBACK callback when it made the task: this one runs after it
            task.add_done_callback(self._forget)
        await self._queue.put((item, done))
        await done  # NotStored when the service stops first
        return 0  # PUBACK reason code: success

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._waiting.pop(task, None)

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until gmqtt has sent the PUBACK of every committed message: its callback on the on_message
        task runs before asyncio.wait's (callbacks run in the order they were added)."""
        committed = [task for task, done in self._waiting.items() if done.done() and done.exception() is None]
        if committed:
            await asyncio.wait(committed, timeout=timeout)

    async def run(self) -> None:
        """Write batches until `stopping` is set, then commit what is queued and return."""
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            getter = asyncio.ensure_future(self._queue.get())
            stopper = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait({getter, stopper}, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                if self.stopping.is_set():
                    break
                await self._write([])  # nothing arrived: only the runs the passing time confirmed
                continue
            items = [getter.result()]
            deadline = loop.time() + self.batch_wait
            while len(items) < self.batch_max:
                while len(items) < self.batch_max and not self._queue.empty():
                    items.append(self._queue.get_nowait())
                left = deadline - loop.time()
                if len(items) >= self.batch_max or left <= 0 or self.stopping.is_set():
                    break
                await asyncio.sleep(min(left, _POLL_S))
            await self._write(items)
        final = []
        while not self._queue.empty():
            final.append(self._queue.get_nowait())
        for start in range(0, len(final), self.batch_max):
            await self._write(final[start:start + self.batch_max], retry=False)

    def abandon(self) -> None:
        """Fail every message still waiting (after the client disconnected): they stay unacknowledged."""
        while not self._queue.empty():
            _item, done = self._queue.get_nowait()
            if not done.done():
                done.set_exception(NotStored())

    async def _write(self, items: list[tuple[Inbound | Quarantined, asyncio.Future[None]]], retry: bool = True) -> None:
        batch = Batch()
        for item, _done in items:
            if isinstance(item, Quarantined):
                batch.quarantined.append(item)
            else:
                batch.messages.append(item)
                batch.fleet_alarms.extend(self.thresholds.check(item))
        batch.fleet_alarms.extend(self.thresholds.tick(self.clock()))
        if not items and not batch.fleet_alarms:
            return
        result = await self._commit(batch, retry)
        for _item, done in items:
            if done.done():
                continue
            if result is None:
                done.set_exception(NotStored())
            else:
                done.set_result(None)
        if result is not None:
            self._count(result, batch)
            if self.on_batch is not None:
                self.on_batch(self)

    async def _commit(self, batch: Batch, retry: bool) -> BatchResult | None:
        """store.ingest(batch) in the store's thread; on failure retry with backoff (the database may be
        restarting) until it works or the service stops: nothing is acknowledged that is not stored."""
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:
            try:
                return await loop.run_in_executor(self.executor, self.store.ingest, batch)
            except Exception as error:  # noqa: BLE001 - any store failure: keep the messages unacknowledged
                if not retry or self.stopping.is_set():
                    log.error("store failed (%s); %d message(s) left unacknowledged", error,
                              len(batch.messages) + len(batch.quarantined))
                    return None
                log.error("store failed (%s); retrying in %.1f s", error, delay)
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, _RETRY_MAX_S)

    def _count(self, result: BatchResult, batch: Batch) -> None:
        c = self.counters
        c.batches += 1
        c.stored += result.stored
        c.duplicates += result.duplicates
        c.readings += result.readings
        c.quarantined += result.quarantined
        c.fleet_alarms += len(batch.fleet_alarms)
        for alarm in batch.fleet_alarms:
            log.info("fleet alarm %s %s on %s: value %g, threshold %g", alarm.alarm,
                     "raised" if alarm.state else "cleared", alarm.device, alarm.value, alarm.threshold)

    def summary(self) -> None:
        """Log the totals (at the end of a run)."""
        c = self.counters
        log.info("totals: received %d, stored %d, duplicates %d, quarantined %d, readings %d, fleet alarms %d, "
                 "batches %d", c.received, c.stored, c.duplicates, c.quarantined, c.readings, c.fleet_alarms,
                 c.batches)

    def report(self, previous: Counters, seconds: float) -> Counters:
        """Log the totals and the rates since `previous`; return a copy of the totals."""
        c = self.counters
        log.info("received %d, stored %d, duplicates %d, quarantined %d, readings %d (%.0f/s), fleet alarms %d, "
                 "queue %d", c.received, c.stored, c.duplicates, c.quarantined, c.readings,
                 (c.readings - previous.readings) / max(seconds, 1e-9), c.fleet_alarms, self._queue.qsize())
        if c.quarantined - previous.quarantined > self._logged_quarantine:
            log.warning("%d more quarantined message(s) not logged one by one",
                        c.quarantined - previous.quarantined - self._logged_quarantine)
        self._logged_quarantine = 0
        return Counters(**vars(c))
