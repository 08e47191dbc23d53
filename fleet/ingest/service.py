"""`fleet ingest`: the long-running service that stores every device message, once.

Exactly once, end to end. The client (gmqtt, MQTT 5) runs with optimistic_acknowledgement=False: the async
`on_message` (fleet/ingest/writer.py) returns only after the batch holding its message is committed, and
gmqtt sends the PUBACK when it returns (gmqtt/mqtt/handler.py; under MQTT 3.1.1 gmqtt acks at once, hence
MQTT 5 and the check after connecting). A crash before the commit leaves the message unacknowledged in our
persistent session (clean start off, fixed client id `fleet-ingest-<fleet>`, session expiry below), so the
broker delivers it again; a crash after the commit and before the PUBACK delivers it twice, and the store
drops the copy by (device, boot, seq). Two ingests with one client id would take the session from each
other: run one, or several workers sharing the stream (below).

Shared subscription (`--shared GROUP --worker N`): each worker subscribes to `$share/GROUP/dt/<fleet>/+/+`
(MQTT 5 section 4.8.2) with its own persistent session, client id `fleet-ingest-<fleet>-<GROUP>-<N>`, and
the broker hands each message to one member of the group. Measured on Mosquitto 2.0 (hil_tests/
test_fleet_scale.py): it deals messages round robin to every member whose session exists, connected or
not; a member that is down keeps its share queued, and what was in flight to it unacknowledged, in its
own session until it comes back with the same client id. So a worker killed and restarted with the
same N loses nothing, but one that never returns strands its share (until the session expires): a
worker retired for good must first come back once and be stopped with its queue drained.

Receive Maximum tells the broker how many QoS 1 messages it may have in flight to us unacknowledged.
Without it Mosquitto uses its max_inflight_messages (20 in the fleet's broker config), which would cap
every batch at 20 messages; measured: with it, Mosquitto sends up to the client's value.

gmqtt reconnects by itself when the broker goes away (every RECONNECT_DELAY_S); on a connection without
our session (a broker restarted without persistence) we subscribe again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.broker_address import BrokerAddress, untrusted
from fleet.errors import FleetError
from fleet.ingest.thresholds import Thresholds
from fleet.ingest.writer import BATCH_MAX, BATCH_WAIT_S, BatchWriter, Counters, NotStored
from fleet.store.base import Store

log = logging.getLogger("fleet.ingest")

RECEIVE_MAX = 4 * BATCH_MAX  # the batch being written plus the next ones
SESSION_EXPIRY_S = 7 * 86400  # the broker keeps our session, and queues for us, through a week of downtime
KEEPALIVE_S = 30
CONNECT_TIMEOUT_S = 10.0
RECONNECT_DELAY_S = 2
REPORT_EVERY_S = 10.0  # counters logged and the registry (kinds, desired configs) read again
_REFUSED_AUTH = (4, 5, 134, 135)


@dataclass
class Settings:
    """Where the ingest reads from and writes to, and as whom."""

    broker: BrokerAddress
    fleet: str
    username: str | None = None
    password: str | None = None
    store_url: str | None = None
    home: Path | None = None
    client_id: str | None = None  # default fleet-ingest-<fleet>, or fleet-ingest-<fleet>-<shared>-<worker>
    shared: str | None = None  # shared-subscription group: several workers split the stream
    worker: int = 0  # this worker's number within the group (its session)
    fleet_alarms: bool = True  # check readings against thresholds (needs every reading of a device)
    batch_max: int = BATCH_MAX
    batch_wait: float = BATCH_WAIT_S
    report_every: float = REPORT_EVERY_S
    on_batch: Callable[[BatchWriter], None] | None = None  # after each committed batch


def settings_for(broker_url: str | None = None, store_url: str | None = None, home: Path | None = None,
                 shared: str | None = None, worker: int = 0, broker_ca: str | None = None) -> Settings:
    """Settings of this fleet: its broker (or `broker_url`, checked with the CA file `broker_ca`), its name,
    the fleet-ops account, its store; with `shared`, worker `worker` of that shared-subscription group."""
    import re

    from fleet.broker import ops_secret
    from fleet.broker_address import broker_from_options, default_broker
    from fleet.credentials import OPS_USER
    from fleet.home import fleet_name

    if shared is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,15}", shared):
        raise FleetError("bad shared-subscription group %r: use 1..16 characters of a-z 0-9 - _" % shared)
    if not 0 <= worker <= 999:
        raise FleetError("bad worker number %d: use 0..999" % worker)
    broker = broker_from_options(broker_url, broker_ca, home=home) or default_broker(home)
    return Settings(broker, fleet_name(home), OPS_USER, ops_secret(home), store_url, home, shared=shared,
                    worker=worker)


def client_id(settings: Settings) -> str:
    """The ingest's MQTT client id: its persistent session (one per worker of a shared group)."""
    if settings.client_id:
        return settings.client_id
    if settings.shared:
        return "fleet-ingest-%s-%s-%d" % (settings.fleet, settings.shared, settings.worker)
    return "fleet-ingest-" + settings.fleet


def configure_logging(quiet: bool = False) -> None:
    """Log lines to stderr: connection changes, quarantined messages, counters (unless `quiet`)."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    # gmqtt's own lines (every refusal, every write to a socket it just closed) repeat what we log once.
    logging.getLogger("fleet.ingest.mqtt").setLevel(logging.CRITICAL)
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)


def run(settings: Settings) -> Counters:
    """Run until SIGTERM or SIGINT, then stop cleanly; the totals of the run."""

    async def main() -> Counters:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(settings, stop)

    return asyncio.run(main())


async def serve(settings: Settings, stop: asyncio.Event) -> Counters:
    """Ingest until `stop` is set: commit what is queued, disconnect, close the store."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_unacknowledged)
    executor = ThreadPoolExecutor(1, thread_name_prefix="fleet-store")  # the store's one thread
    try:
        store: Store = await loop.run_in_executor(executor, _open_store, settings)
    except BaseException:
        executor.shutdown()
        raise
    client = None
    writer: BatchWriter | None = None
    try:
        thresholds = Thresholds(enabled=settings.fleet_alarms)
        thresholds.seed(await loop.run_in_executor(executor, store.open_fleet_alarms))
        await _refresh_devices(thresholds, settings.home)
        writer = BatchWriter(settings.fleet, store, executor, thresholds, batch_max=settings.batch_max,
                             batch_wait=settings.batch_wait, queue_max=RECEIVE_MAX, on_batch=settings.on_batch)
        client = _client(settings, writer)
        await _connect(client, settings.broker, settings.username)
        log.info("ingest of fleet %s from %s (client id %s)", settings.fleet, settings.broker, client._client_id)
        writing = asyncio.create_task(writer.run())
        reporting = asyncio.create_task(_report(writer, thresholds, settings))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({writing, stopped}, return_when=asyncio.FIRST_COMPLETED)
        writer.stopping.set()
        stopped.cancel()
        reporting.cancel()
        await writing  # a writer that failed raises here
        await writer.settle()  # the PUBACKs of the last batch leave before the DISCONNECT
        writer.summary()
    finally:
        if client is not None:
            await _disconnect(client)
        if writer is not None:
            writer.abandon()
        await loop.run_in_executor(executor, store.close)
        executor.shutdown()
    return writer.counters


def _open_store(settings: Settings) -> Store:
    from fleet.store import open_store

    return open_store(settings.store_url, home=settings.home)


def _client(settings: Settings, writer: BatchWriter) -> Any:
    import gmqtt

    client = gmqtt.Client(client_id(settings), clean_session=False,
                          optimistic_acknowledgement=False, session_expiry_interval=SESSION_EXPIRY_S,
                          receive_maximum=RECEIVE_MAX, logger=logging.getLogger("fleet.ingest.mqtt"))
    client.set_config({"reconnect_retries": -1, "reconnect_delay": RECONNECT_DELAY_S})
    if settings.username:
        client.set_auth_credentials(settings.username, settings.password)
    topic = "dt/%s/+/+" % settings.fleet
    if settings.shared:
        topic = "$share/%s/%s" % (settings.shared, topic)
    connected = [False]  # a refused CONNECT also ends in on_disconnect: only a lost connection is news

    def on_connect(client: Any, session_present: int, result: int, properties: Any) -> None:
        connected[0] = True
        if not session_present:  # a new session has no subscription yet
            client.subscribe(topic, qos=1)
        log.info("connected to %s (%s)", settings.broker, "session resumed" if session_present else "new session")

    def on_disconnect(client: Any, packet: Any, exc: Any = None) -> None:
        if connected[0] and not writer.stopping.is_set():
            log.warning("lost the broker at %s; reconnecting every %d s", settings.broker, RECONNECT_DELAY_S)
        connected[0] = False

    def on_subscribe(client: Any, mid: int, qos: Any, properties: Any) -> None:
        log.info("subscribed to %s", topic)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_disconnect = on_disconnect
    client.on_message = writer.on_message
    return client


async def _connect(client: Any, broker: BrokerAddress, username: str | None) -> None:
    from gmqtt.mqtt.constants import MQTTv50
    from gmqtt.mqtt.handler import MQTTConnectError

    # The CA of --broker-ca, else the system's (as ssl=True had it); gmqtt reconnects with the same context.
    context = broker.tls_context() if broker.tls else False
    try:
        await asyncio.wait_for(client.connect(broker.host, broker.port, ssl=context, keepalive=KEEPALIVE_S),
                               CONNECT_TIMEOUT_S)
    except ssl.SSLCertVerificationError as error:
        await _disconnect(client)
        raise FleetError(untrusted(broker, error)) from None
    except MQTTConnectError as error:
        await _disconnect(client)
        if getattr(error, "_code", None) in _REFUSED_AUTH:
            raise FleetError("the broker at %s refused the account %s (%s): it does not run this fleet's password "
                             "file; run `fleet broker config` and start or reload mosquitto with it"
                             % (broker, username or "(anonymous)", error.message)) from None
        raise FleetError("the broker at %s refused the connection (%s)" % (broker, error.message)) from None
    except (OSError, TimeoutError) as error:
        await _disconnect(client)
        raise FleetError("cannot reach the broker at %s (%s): start it, or give --broker mqtt://HOST:PORT"
                         % (broker, getattr(error, "strerror", None) or error or "no answer")) from None
    if client._connection_state.protocol_version != MQTTv50:
        await _disconnect(client)
        raise FleetError("the broker at %s does not speak MQTT 5, which the ingest needs to acknowledge a message "
                         "only once it is stored; use Mosquitto 1.6 or later" % broker)


async def _disconnect(client: Any) -> None:
    try:
        await client.disconnect()
    except (OSError, AttributeError, RuntimeError):  # never connected, or the socket is already gone
        pass


async def _refresh_devices(thresholds: Thresholds, home: Path | None) -> None:
    """Kinds and desired configs from the registry (read in a thread: it is a file under a lock)."""

    def records() -> list[dict[str, Any]]:
        from fleet.registry import open_registry

        return open_registry(home).all()

    try:
        thresholds.set_devices(await asyncio.to_thread(records))
    except FleetError as error:
        log.warning("registry not read (%s); thresholds stay as they were", error)


async def _report(writer: BatchWriter, thresholds: Thresholds, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    previous, since = Counters(), loop.time()
    while True:
        await asyncio.sleep(settings.report_every)
        now = loop.time()
        previous, since = writer.report(previous, now - since), now
        await _refresh_devices(thresholds, settings.home)


def _quiet_unacknowledged(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """gmqtt sends a PUBACK from a done-callback of our on_message; for a message left unacknowledged on
    purpose (stopping) that callback raises NotStored or CancelledError: expected, not worth a traceback."""
    if isinstance(context.get("exception"), (NotStored, asyncio.CancelledError)):
        return
    loop.default_exception_handler(context)
