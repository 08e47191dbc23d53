"""The ingest's receive side, each figure a ratio to `mosquitto_sub` draining the same stream in the same run.

1. MQTT clients. How fast each Python client receives 64-byte messages (QoS 0 and QoS 1) on loopback from
   our own Mosquitto: gmqtt (also as the ingest runs it, the PUBACK sent after an async handler returns),
   paho-mqtt and aiomqtt (measured only when installed: `pip install aiomqtt`; not a dependency). This is
   why the ingest uses gmqtt rather than aiomqtt.
2. `fleet ingest` end to end: a realistic mix of messages from many simulated devices (telemetry packs of
   one to three readings, backfill packs, health, alarm events, acks, QoS 1 resends, a little garbage)
   decoded, checked against thresholds and committed, for the SQLite store and, when a server answers on
   127.0.0.1:5432, PostgreSQL (a database made for the run and dropped after it).
3. `fleet ingest --shared GROUP --worker N` with 1, 2 and 4 workers, each its own process (the command as an
   operator runs it, fleet alarms off as the README says for shared workers), on both stores: readings/s
   from the first byte published to the last row committed (the workers are subscribed and idle before,
   the stream goes to them live), mosquitto_sub's drain of the same stream as the reference, and CPU per
   message: the workers' CPU (all threads, /proc) over that window, and beside it the broker's, the
   database server's (PostgreSQL backends of the run's database; SQLite runs inside the workers) and the
   whole machine's busy share, which says whether the 2 cores were the limit. Store errors the workers
   logged (a batch retried: SQLite's lock waited out, a PostgreSQL deadlock) are counted.

Method, the same for every subscriber: it makes a persistent session and subscribes, goes away; a raw
MQTT publisher sends the whole stream, which the broker queues for every session; then the subscriber
comes back and drains its queue. Its rate is messages from its first to its last message, so the
publisher and the connection set-up are not in it; each client figure is the best of REPEATS drains.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.brokerproc import Broker

N_CLIENT = 50_000
PAYLOAD_BYTES = 64
REPEATS = 3
INGEST_MESSAGES = 30_000
INGEST_DEVICES = 1_000
TOPIC = "bench/t"
FILTER = "bench/#"
FLEET = "bench"
# Queue everything for offline sessions (QoS 0 included) and let the broker send without an in-flight cap,
# so what is measured is the receiving client.
BROKER_EXTRA = ("max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\nqueue_qos0_messages true\n"
                "max_connections -1\n")
PG_URL = "postgresql://postgres@127.0.0.1:5432/"
TIMEOUT_S = 300.0
WORKER_COUNTS = (1, 2, 4)
POLL_S = 0.05  # how often the store is asked whether the workers are done (adds <= this to a run)


# ---- a raw MQTT 3.1.1 publisher: the stream costs the benchmark nothing but a sendall ----

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def publish(port: int, messages: list[tuple[str, bytes]], qos: int) -> None:
    """Send every (topic, payload) at `qos`, then return once the broker has handled them all (the PUBACK
    of a final QoS 1 marker: a broker handles one connection's packets in order)."""
    if len(messages) >= 0xFFFF:
        raise ValueError("at most 65534 messages per stream (one packet id each)")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_packet(0x10, _text("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _text("bench-pub")))
        if _read(sock, 4)[3] != 0:
            raise RuntimeError("the broker refused the benchmark's publisher")
        stream = bytearray()
        for mid, (topic, payload) in enumerate(messages, 1):
            ident = struct.pack("!H", mid) if qos else b""
            stream += _packet(0x30 | qos << 1, _text(topic) + ident + payload)
        stream += _packet(0x32, _text("bench-end") + struct.pack("!H", 0xFFFF))
        sock.sendall(stream)
        while True:  # PUBACKs: 0x40 0x02 mid
            if struct.unpack("!H", _read(sock, 4)[2:])[0] == 0xFFFF:
                return


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError("the broker closed the benchmark's publisher")
        data += chunk
    return data


# ---- subscribers: prepare (persistent session + subscription), then drain n messages -> seconds ----

class MosquittoSub:
    name = "mosquitto_sub"

    def __init__(self, port: int, ident: str, qos: int, topic: str = FILTER) -> None:
        self.base = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-c", "-i", ident, "-q", str(qos),
                     "-t", topic]

    def prepare(self) -> None:
        subprocess.run(self.base + ["-E"], check=True, capture_output=True, timeout=30)

    def drain(self, n: int) -> float:
        out = subprocess.run(self.base + ["-C", str(n), "-F", "%U"], check=True, capture_output=True, text=True,
                             timeout=TIMEOUT_S).stdout.split()
        return float(out[-1]) - float(out[0])


class Paho:
    name = "paho-mqtt"

    def __init__(self, port: int, ident: str, qos: int, topic: str = FILTER) -> None:
        self.port, self.ident, self.qos, self.topic = port, ident, qos, topic

    def _client(self) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.ident, clean_session=False)
        client.max_inflight_messages_set(0xFFFF)
        return client

    def prepare(self) -> None:
        import threading

        client, done = self._client(), threading.Event()
        client.on_subscribe = lambda *args: done.set()
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        client.subscribe(self.topic, self.qos)
        done.wait(10)
        client.disconnect()
        client.loop_stop()

    def drain(self, n: int) -> float:
        import threading

        client, done, times = self._client(), threading.Event(), [0.0, 0.0, 0]

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            times[2] += 1
            if times[2] == 1:
                times[0] = time.perf_counter()
            if times[2] == n:
                times[1] = time.perf_counter()
                done.set()

        client.on_message = on_message
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        finished = done.wait(TIMEOUT_S)
        client.disconnect()
        client.loop_stop()
        if not finished:
            raise RuntimeError("paho received %d of %d messages" % (times[2], n))
        return times[1] - times[0]


class Gmqtt:
    name = "gmqtt"

    def __init__(self, port: int, ident: str, qos: int, topic: str = FILTER, deferred: bool = False) -> None:
        self.port, self.ident, self.qos, self.topic, self.deferred = port, ident, qos, topic, deferred
        if deferred:
            self.name = "gmqtt, PUBACK after the handler (as the ingest)"

    def _client(self) -> Any:
        import gmqtt

        return gmqtt.Client(self.ident, clean_session=False, optimistic_acknowledgement=not self.deferred,
                            session_expiry_interval=3600)

    def prepare(self) -> None:
        async def main() -> None:
            client, done = self._client(), asyncio.Event()
            client.on_subscribe = lambda *args: done.set()
            await client.connect("127.0.0.1", self.port)
            client.subscribe(self.topic, qos=self.qos)
            await asyncio.wait_for(done.wait(), 10)
            await client.disconnect()

        asyncio.run(main())

    def drain(self, n: int) -> float:
        async def main() -> float:
            client, done, times = self._client(), asyncio.Event(), [0.0, 0.0, 0]

            def count() -> None:
                times[2] += 1
                if times[2] == 1:
                    times[0] = time.perf_counter()
                if times[2] == n:
                    times[1] = time.perf_counter()
                    done.set()

            def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
                count()
                return 0

            async def on_message_async(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
                count()
                return 0

            client.on_message = on_message_async if self.deferred else on_message
            await client.connect("127.0.0.1", self.port)
            await asyncio.wait_for(done.wait(), TIMEOUT_S)
            await client.disconnect()
            return times[1] - times[0]

        return asyncio.run(main())


class Aiomqtt:
    name = "aiomqtt"

    def __init__(self, port: int, ident: str, qos: int, topic: str = FILTER) -> None:
        self.port, self.ident, self.qos, self.topic = port, ident, qos, topic

    def _client(self) -> Any:
        import aiomqtt

        return aiomqtt.Client("127.0.0.1", self.port, identifier=self.ident, clean_session=False,
                              max_inflight_messages=0xFFFF)

    def prepare(self) -> None:
        async def main() -> None:
            async with self._client() as client:
                await client.subscribe(self.topic, qos=self.qos)

        asyncio.run(main())

    def drain(self, n: int) -> float:
        async def main() -> float:
            count, first = 0, 0.0
            async with self._client() as client:
                async for _message in client.messages:
                    count += 1
                    if count == 1:
                        first = time.perf_counter()
                    if count == n:
                        return time.perf_counter() - first
            raise RuntimeError("aiomqtt stopped after %d of %d messages" % (count, n))

        return asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def clients(port: int, n: int = N_CLIENT, repeats: int = REPEATS) -> list[dict[str, Any]]:
    """Receive rate of each client, QoS 0 and 1, beside mosquitto_sub's on the same stream."""
    payload = bytes(range(PAYLOAD_BYTES))
    rows = []
    for qos in (0, 1):
        kinds: list[tuple[type, dict[str, Any]]] = [(MosquittoSub, {}), (Gmqtt, {})]
        if qos:
            kinds.append((Gmqtt, {"deferred": True}))
        kinds.append((Paho, {}))
        if _installed("aiomqtt"):
            kinds.append((Aiomqtt, {}))
        subs = [cls(port, "bench-q%d-%d" % (qos, k), qos, **extra) for k, (cls, extra) in enumerate(kinds)]
        best = [0.0] * len(subs)
        for _ in range(repeats):
            for sub in subs:
                sub.prepare()
            publish(port, [(TOPIC, payload)] * n, qos)  # queued once for every session
            for k, sub in enumerate(subs):
                best[k] = max(best[k], (n - 1) / sub.drain(n))
        for sub, rate in zip(subs, best, strict=True):
            rows.append({"client": sub.name, "qos": qos, "messages_s": rate, "ratio": rate / best[0]})
        if not _installed("aiomqtt"):
            rows.append({"client": "aiomqtt", "qos": qos, "messages_s": None, "ratio": None})
    return rows


# ---- `fleet ingest` on a realistic mix ----

#: birth sensor name -> measurements on the wire (agent/defaults.py MEASURES, agent/reporter.py WIRE)
SENSORS = {"water": ("level",), "manhole": ("tilt",), "billboard": ("wind", "gust", "load")}


def _value(name: str, rnd: random.Random) -> int | float:
    if name == "level":
        return rnd.choice((0, 0, 0, rnd.randrange(0, 400)))  # mm; mostly a dry street
    if name == "load":
        return rnd.randrange(0, 4500)  # N
    return round(rnd.uniform(0, 30), 2)  # tilt deg, wind and gust m/s


def mix(devices: int = INGEST_DEVICES, total: int = INGEST_MESSAGES, seed: int = 6) -> tuple[list[tuple[str, bytes]], int]:
    """(messages, readings they hold once resends and garbage are left out): a birth per device, then 80 %
    live telemetry packs of 1-3 readings, 5 % backfill packs of 10-30 readings, 8 % health, 2 % alarm
    events, 1 % acks, 3 % QoS 1 resends of an earlier message, 1 % garbage (bad CBOR, unknown type)."""
    from protocols import up, up_status

    rnd, now = random.Random(seed), int(time.time())
    kinds = [list(SENSORS)[i % 3] for i in range(devices)]
    names = ["%s-%04d" % (kind[:2], i) for i, kind in enumerate(kinds)]
    seqs = [1] * devices
    sent: list[list[tuple[str, bytes]]] = [[] for _ in range(devices)]
    out = [("dt/%s/%s/state" % (FLEET, names[i]), up_status.state(1, 0, True, "1.4.2", 0, 1, kinds[i]))
           for i in range(devices)]
    readings = 0
    while len(out) < total:
        i, r = rnd.randrange(devices), rnd.random()
        seq, topic = seqs[i], "dt/%s/%s/" % (FLEET, names[i])
        if r < 0.85:
            measures = SENSORS[kinds[i]]
            if r < 0.80:
                pack = [{0: m, 2: _value(m, rnd), 6: now - rnd.randrange(0, 5)}
                        for m in rnd.sample(measures, rnd.randint(1, len(measures)))]
            else:  # an outbox backlog after a network cut: relative times, oldest first
                count = rnd.randint(10, 30)
                pack = [{0: measures[0], 2: _value(measures[0], rnd), 6: -30 * (count - k)} for k in range(count)]
            message = (topic + "telemetry", up.telemetry(1, seq, pack))
            readings += len(pack)
        elif r < 0.93:
            message = (topic + "health", up_status.health(1, seq, 600 + seq, heap_free=60000, battery=3700, outbox=0))
        elif r < 0.95:
            message = (topic + "event", up.event(1, seq, "storm", rnd.randint(0, 1), 2, 25.0, 24.5, -3))
        elif r < 0.96:
            message = (topic + "ack", up_status.ack(1, seq, rnd.randrange(1 << 30), 0, config=1))
        elif r < 0.99 and sent[i]:
            out.append(rnd.choice(sent[i]))  # a resend: same boot and seq
            continue
        else:
            out.append(rnd.choice([(topic + "telemetry", b"\xff\x00garbage"), (topic + "bogus", b"\xa0")]))
            continue
        seqs[i] += 1
        sent[i].append(message)
        out.append(message)
    return out, readings


def ingest(port: int, store_url: str, home: Path, messages: list[tuple[str, bytes]], readings: int,
           tag: str) -> dict[str, Any]:
    """`fleet ingest` (the service in this process) draining `messages`, beside mosquitto_sub."""
    import logging

    from fleet.broker_address import BrokerAddress
    from fleet.ingest.service import Settings, serve

    logging.getLogger("fleet.ingest").setLevel(logging.ERROR)  # the garbage would log a line each
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    ident, topic = "fleet-ingest-bench-" + tag, "dt/%s/+/+" % FLEET
    Gmqtt(port, ident, 1, topic).prepare()  # the ingest's own persistent session: same id, MQTT 5
    reference = MosquittoSub(port, "bench-ref-" + tag, 1, topic)
    reference.prepare()
    publish(port, messages, 1)
    reference_rate = (len(messages) - 1) / reference.drain(len(messages))
    finished: list[Any] = []

    async def main() -> Any:
        stop = asyncio.Event()

        def on_batch(writer: Any) -> None:
            c = writer.counters
            if c.stored + c.duplicates + c.quarantined >= len(messages) and not finished:
                finished.extend([time.monotonic(), writer.first_at])
                stop.set()

        settings = Settings(BrokerAddress("127.0.0.1", port), FLEET, store_url=store_url, home=home,
                            client_id=ident, on_batch=on_batch)
        return await asyncio.wait_for(serve(settings, stop), TIMEOUT_S)

    counters = asyncio.run(main())
    seconds = finished[0] - finished[1]
    if counters.readings != readings:
        raise RuntimeError("the ingest stored %d readings, the stream holds %d" % (counters.readings, readings))
    rate = (len(messages) - 1) / seconds
    return {"messages": len(messages), "readings": readings, "seconds": seconds, "messages_s": rate,
            "readings_s": readings / seconds, "mosquitto_sub_messages_s": reference_rate,
            "ratio": rate / reference_rate, "duplicates": counters.duplicates, "quarantined": counters.quarantined,
            "fleet_alarms": counters.fleet_alarms, "batches": counters.batches}


def _postgres() -> tuple[str, Callable[[], None]] | None:
    """A fresh database on the machine's server and its dropper; None when no server answers."""
    try:
        import psycopg

        admin = psycopg.connect(PG_URL + "postgres", autocommit=True, connect_timeout=3)
    except Exception:  # noqa: BLE001 - no driver or no server: the PostgreSQL figure is left out
        return None
    name = "bench_ingest_%d_%d" % (os.getpid(), int(time.time()))
    admin.execute("CREATE DATABASE %s" % name)

    def drop() -> None:
        admin.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
        admin.close()

    return PG_URL + name, drop


# ---- `fleet ingest --shared GROUP --worker N`: several worker processes on one store ----

def expected(messages: list[tuple[str, bytes]]) -> tuple[int, int]:
    """(distinct valid messages, quarantined ones): the rows of `seen` and `quarantine` once all is stored."""
    from fleet.ingest.decode import decode
    from fleet.store.model import Quarantined

    keys, quarantined, now = set(), 0, time.time()
    for topic, payload in messages:
        item = decode(topic, payload, now, FLEET)
        if isinstance(item, Quarantined):
            quarantined += 1
        else:
            keys.add((item.device, item.boot, item.seq))
    return len(keys), quarantined


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all its threads (/proc/PID/stat fields 14, 15)."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat: user .. steal)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


class StoreRows:
    """The run's store seen from the outside, over a connection of its own."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite://"):
            import sqlite3

            self.db: Any = sqlite3.connect(url[len("sqlite://"):], timeout=30)
            self.server = False
        else:
            import psycopg

            self.db = psycopg.connect(url, autocommit=True)
            self.server = True

    def count(self, table: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0])

    def backends(self) -> list[int]:
        """Process ids of the PostgreSQL backends serving the workers (none for SQLite)."""
        if not self.server:
            return []
        rows = self.db.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid()").fetchall()
        return [int(row[0]) for row in rows]

    def wait(self, seen: int, quarantined: int, deadline: float) -> None:
        while self.count("seen") < seen or self.count("quarantine") < quarantined:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers stored %d of %d messages in time" % (self.count("seen"), seen))
            time.sleep(POLL_S)

    def close(self) -> None:
        self.db.close()


def _start_workers(port: int, store_url: str, home: Path, group: str, count: int,
                   started: list[tuple[Any, Path]]) -> None:
    """`fleet ingest --shared GROUP --worker k` for k < count, each logging to its own file; each goes into
    `started` as soon as it runs (the caller stops them, also when one fails to subscribe)."""
    env = dict(os.environ, FLEET_HOME=str(home))
    for k in range(count):
        log = home / ("ingest-%s-%d.log" % (group, k))
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "fleet.cli.main", "ingest", "--broker",
                                     "mqtt://127.0.0.1:%d" % port, "--store", store_url, "--shared", group,
                                     "--worker", str(k), "--no-fleet-alarms"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=out)
        started.append((proc, log))
    deadline = time.monotonic() + 60
    for proc, log in started:  # subscribed: the broker deals each worker its share from now on
        while "subscribed to" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not subscribe: %s" % log.read_text(errors="replace")[-2000:])
            time.sleep(0.05)


def _stop_workers(started: list[tuple[Any, Path]]) -> int:
    """SIGTERM every worker (each commits what it holds and disconnects); the store errors they logged."""
    for proc, _log in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    errors = 0
    for proc, log in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors += log.read_text(errors="replace").count("store failed")
    return errors


def workers(store_url: str, home: Path, messages: list[tuple[str, bytes]], readings: int,
            expect: tuple[int, int], count: int, group: str) -> dict[str, Any]:
    """`count` worker processes draining `messages` live on a fresh broker, beside mosquitto_sub."""
    topic = "dt/%s/+/+" % FLEET
    started: list[tuple[Any, Path]] = []
    with Broker(home / ("broker-" + group), extra=BROKER_EXTRA) as broker:
        rows: StoreRows | None = None
        try:
            _start_workers(broker.port, store_url, home, group, count, started)
            rows = StoreRows(store_url)
            reference = MosquittoSub(broker.port, "bench-ref-" + group, 1, topic)
            reference.prepare()
            pids, servers = [proc.pid for proc, _log in started], rows.backends()
            broker_pid = broker.proc.pid if broker.proc is not None else os.getpid()
            before = ([cpu_seconds(pid) for pid in pids], cpu_seconds(broker_pid),
                      [cpu_seconds(pid) for pid in servers], machine_ticks())
            t0 = time.monotonic()
            publish(broker.port, messages, 1)
            rows.wait(*expect, t0 + TIMEOUT_S)
            seconds = time.monotonic() - t0
            after = ([cpu_seconds(pid) for pid in pids], cpu_seconds(broker_pid),
                     [cpu_seconds(pid) for pid in servers], machine_ticks())
            errors = _stop_workers(started)
            stored = rows.count("readings")
        finally:
            _stop_workers(started)  # again: a run that failed half-way leaves no worker behind
            if rows is not None:
                rows.close()
        if stored != readings:
            raise RuntimeError("%d workers stored %d readings, the stream holds %d" % (count, stored, readings))
        reference_rate = (len(messages) - 1) / reference.drain(len(messages))
    n = len(messages)
    rate = n / seconds
    busy, total = (after[3][0] - before[3][0]), (after[3][1] - before[3][1])
    return {"workers": count, "messages": n, "readings": readings, "seconds": seconds, "messages_s": rate,
            "readings_s": readings / seconds, "mosquitto_sub_messages_s": reference_rate,
            "ratio": rate / reference_rate, "store_errors": errors,
            "worker_cpu_us": (sum(after[0]) - sum(before[0])) / n * 1e6,
            "broker_cpu_us": (after[1] - before[1]) / n * 1e6,
            "server_cpu_us": (sum(after[2]) - sum(before[2])) / n * 1e6 if servers else None,
            "machine_busy": busy / total if total else None}


def worker_table(stream: list[tuple[str, bytes]], readings: int, root: Path,
                 counts: tuple[int, ...] = WORKER_COUNTS) -> list[dict[str, Any]]:
    """`workers()` for each count on a fresh SQLite file and, when a server answers, a fresh PostgreSQL database."""
    from fleet.home import private_dir, set_fleet_name

    home = private_dir(root / "home")
    set_fleet_name(FLEET, home)
    expect = expected(stream)
    out = []
    for count in counts:
        got = workers("sqlite:///%s" % (root / ("workers-%d.db" % count)), home, stream, readings, expect, count,
                      "sq%d" % count)
        out.append(dict(got, store="sqlite"))
    for count in counts:
        pg = _postgres()
        if pg is None:
            break
        try:
            out.append(dict(workers(pg[0], home, stream, readings, expect, count, "pg%d" % count), store="postgresql"))
        finally:
            pg[1]()
    return out


def worker_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["fleet ingest --shared GROUP --worker N, N worker processes (fleet alarms off), the stream live:",
             "  %-10s %7s %9s %10s %16s %28s %13s %6s" % (
                 "store", "workers", "msg/s", "readings/s", "of mosquitto_sub", "CPU us/msg: workers broker db",
                 "machine busy", "errors")]
    for row in rows:
        server = "%4.0f" % row["server_cpu_us"] if row["server_cpu_us"] is not None else "   -"
        lines.append("  %-10s %7d %9.0f %10.0f %14.0f %% %19.0f %6.0f %s %12.0f %% %6d" % (
            row["store"], row["workers"], row["messages_s"], row["readings_s"], 100 * row["ratio"],
            row["worker_cpu_us"], row["broker_cpu_us"], server, 100 * (row["machine_busy"] or 0),
            row["store_errors"]))
    return lines


def _fmt(rate: float | None) -> str:
    return "%9.0f" % rate if rate is not None else "        -"


def run(n: int = N_CLIENT, repeats: int = REPEATS, messages: int = INGEST_MESSAGES, with_clients: bool = True) -> dict:
    """Client receive rates and ingest throughput (one in-process ingest, then 1, 2 and 4 worker processes),
    each beside mosquitto_sub on the same stream."""
    if shutil.which("mosquitto_sub") is None:
        raise RuntimeError("mosquitto_sub is missing (apt-get install mosquitto-clients)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stream, readings = mix(total=messages)
        with Broker(root / "broker", extra=BROKER_EXTRA) as broker:
            rows = clients(broker.port, n, repeats) if with_clients else []
            stores = {"sqlite": ingest(broker.port, "sqlite:///%s" % (root / "fleet.db"), root, stream, readings,
                                       "sqlite")}
            pg = _postgres()
            if pg is not None:
                try:
                    stores["postgresql"] = ingest(broker.port, pg[0], root, stream, readings, "pg")
                finally:
                    pg[1]()
        scaled = worker_table(stream, readings, root)
    lines = []
    if rows:
        lines += ["MQTT clients draining %d messages of %d bytes from a local Mosquitto (best of %d):"
                  % (n, PAYLOAD_BYTES, repeats),
                  "  %-48s %3s %9s  %s" % ("client", "QoS", "msg/s", "of mosquitto_sub")]
    for row in rows:
        ratio = "%5.0f %%" % (100 * row["ratio"]) if row["ratio"] is not None else "not installed"
        lines.append("  %-48s %3d %s  %s" % (row["client"], row["qos"], _fmt(row["messages_s"]), ratio))
    lines.append("fleet ingest, %d messages from %d devices (%d readings, resends and garbage included):"
                 % (len(stream), INGEST_DEVICES, readings))
    lines.append("one ingest in the bench's process (fleet alarms on), the stream queued before it connects:")
    for name, got in stores.items():
        lines.append("  %-10s %7.0f msg/s = %3.0f %% of mosquitto_sub (%.0f msg/s); %.0f readings/s; %d batches"
                     % (name, got["messages_s"], 100 * got["ratio"], got["mosquitto_sub_messages_s"],
                        got["readings_s"], got["batches"]))
    if pg is None:
        lines.append("  postgresql: no server at 127.0.0.1:5432, not measured")
    lines += worker_lines(scaled)
    return {"clients": rows, "ingest": stores, "workers": scaled, "lines": lines}


if __name__ == "__main__":
    for line in run(with_clients="--no-clients" not in sys.argv[1:])["lines"]:
        print(line)
