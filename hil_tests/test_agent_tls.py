"""The agent over TLS on an emulated board against a real Mosquitto TLS listener (issue 4: "TLS possible
through MicroPython's `tls` module").

A test CA signs the broker's certificate (for 127.0.0.1, an IP subject alternative name). A node whose
identity carries that CA connects over TLS and reports; a node given a CA that did not sign the broker's
certificate refuses the broker, and says so; a TLS node comes back after the broker restarts. The
observer uses the broker's plain listener.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import serial
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hil_tests.agentnode import bundle, install
from protocols.commands import Rebirth
from tests.brokerproc import Broker
from tests.observer import Observer

pytestmark = pytest.mark.hil

FLEET = "city"
# Every TLS node here runs in the emulator's default heap, 110 KB, one that keeps retrying too: TLS keeps
# its context (3 KB) and each attempt needs a TLS socket (2.7 KB) besides.
RETRYING_HEAP = "110k"
#: Refused attempts in a row the node must survive with no task failing (each costs a TLS socket).
REFUSALS = 10
DAY = datetime.timedelta(days=1)


class Pki(NamedTuple):
    ca_pem: str  # the CA that signed the broker's certificate
    other_pem: str  # a CA that did not
    files: tuple[Path, Path, Path]  # the broker's cafile, certfile, keyfile


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject: str, key, issuer: str, issuer_key, *extensions) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - DAY).not_valid_after(now + DAY))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _ca(name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _cert(name, key, name, key, (x509.BasicConstraints(ca=True, path_length=None), True))


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """A CA, the broker's certificate it signed (for 127.0.0.1), and an unrelated CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca = _ca("cityfleet test CA")
    _, other = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("broker", key, "cityfleet test CA", ca_key,
                 (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False))
    files = (folder / "ca.pem", folder / "broker.pem", folder / "broker.key")
    files[0].write_text(_pem(ca))
    files[1].write_text(_pem(cert))
    files[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Pki(_pem(ca), _pem(other), files)


@pytest.fixture(scope="module")
def tls_broker(pki, tmp_path_factory):
    """A Mosquitto with a plain listener (broker.port, for the observer) and a TLS one (tls_port)."""
    with Broker(tmp_path_factory.mktemp("mosquitto-tls"), tls=pki.files) as broker:
        yield broker


def _tls_node(board_factory, broker, ca_pem, tmp_root, heap=None):
    board = board_factory("water-level", heap=heap)  # None: the emulator's default heap, 110 KB
    board.set({"level_cm": "0", "mount_height_cm": "300"})
    device = "wl-%s" % board.uid[-6:]
    # A short backoff: the refused node retries every second or two.
    identity = {"fleet": FLEET, "id": device, "kind": "water-level", "calibration": {"mount_mm": 3000},
                "broker": {"host": "127.0.0.1", "port": broker.tls_port, "tls": True, "ca": ca_pem,
                           "backoff_s": [1, 2]}}
    install(board, bundle(tmp_root), identity)
    return board, device


def _wait_log(broker: Broker, pattern: str, count: int = 1, timeout: float = 60) -> list[str]:
    """The broker log's lines matching `pattern`, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in broker.log_text().splitlines() if re.search(pattern, line)]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("no %d lines like %r in the broker log within %.0f s:\n%s"
                                 % (count, pattern, timeout, broker.log_text()[-2000:]))
        time.sleep(0.2)


def _console_until(port: str, start: str, count: int, timeout: float = 60) -> tuple[list[str], str]:
    """Read the board's console until `count` whole lines start with `start`: (those lines, all it said)."""
    deadline = time.monotonic() + timeout
    said = b""
    with serial.serial_for_url(port, 115200, timeout=0.5) as console:
        while time.monotonic() < deadline:
            said += console.read(max(1, console.in_waiting))
            text = said.decode(errors="replace")
            lines = [line.strip() for line in text.splitlines(keepends=True)
                     if line.startswith(start) and line.endswith("\n")]
            if len(lines) >= count:
                return lines, text
    raise AssertionError("not %d console lines starting %r within %.0f s; it said:\n%r"
                         % (count, start, timeout, said[-1500:]))


def test_a_node_with_the_brokers_ca_reports_over_tls(board_factory, tls_broker, pki, tmp_path_factory):
    observer = Observer(tls_broker.port)
    try:
        board, device = _tls_node(board_factory, tls_broker, pki.ca_pem, tmp_path_factory.getbasetemp())
        birth = observer.wait_for("state", lambda m: m.online, timeout=90)
        assert birth.kind == "water"
        board.set({"level_cm": "12"})
        observer.wait_for("telemetry", timeout=60)
        health = observer.wait_for("health", timeout=60)
        assert health.reconnects == 1  # one session, up since the first attempt
        print("TLS node, 110 KB heap: free %d, lowest %d" % (health.heap_free, health.heap_min))
    finally:
        observer.close()
    assert {d for d, _, _ in observer.seen} == {device}
    # It came in on the TLS listener: the broker logged its connection there, from the same client port.
    client = _wait_log(tls_broker, r"New client connected from 127\.0\.0\.1:\d+ as %s-%s " % (FLEET, device))
    source = client[0].split("127.0.0.1:")[1].split()[0]
    _wait_log(tls_broker, r"New connection from 127\.0\.0\.1:%s on port %d\." % (source, tls_broker.tls_port))


def test_a_node_given_another_ca_refuses_the_broker(board_factory, tls_broker, pki, tmp_path_factory):
    observer = Observer(tls_broker.port)
    try:
        board, device = _tls_node(board_factory, tls_broker, pki.other_pem, tmp_path_factory.getbasetemp(),
                                  RETRYING_HEAP)
        # The node says why on its console, at each attempt, and keeps running (no task fails on the way).
        lines, said = _console_until(board.port, "link: ", REFUSALS, timeout=90)
        refused = "link: BROKER_UNREACHABLE: TLS: The certificate is not correctly signed by the trusted CA"
        assert set(lines) == {refused} and len(lines) >= REFUSALS
        assert "task failed" not in said, said
        # The broker saw the node turn its certificate down (alert "unknown CA"), more than once: it
        # retried, and never got past the handshake.
        _wait_log(tls_broker, r"alert unknown ca", count=REFUSALS)
        observer.drain(0.5)
        assert not [m for d, _, m in observer.seen if d == device]
        assert ("as %s-%s " % (FLEET, device)) not in tls_broker.log_text()
    finally:
        observer.close()


def test_a_tls_node_reconnects_after_the_broker_restarts(board_factory, tls_broker, pki, tmp_path_factory):
    # One TLS context serves every session; the node retries while the broker is away (RETRYING_HEAP).
    observer = Observer(tls_broker.port)
    try:
        board, device = _tls_node(board_factory, tls_broker, pki.ca_pem, tmp_path_factory.getbasetemp(),
                                  RETRYING_HEAP)
        first = observer.wait_for("state", lambda m: m.online, timeout=90)
    finally:
        observer.close()
    tls_broker.stop()
    tls_broker.start()
    observer = Observer(tls_broker.port)
    try:
        again = observer.wait_for("state", lambda m: m.online, timeout=120)
        assert again.boot == first.boot  # the same run of the agent, not a reboot
        start = len(observer.seen)
        observer.command(FLEET, device, Rebirth(5))  # health now, with the second session counted
        health = observer.wait_for("health", timeout=60, after=start)
        assert health.reconnects == 2
        print("TLS node after a reconnect, %s heap: free %d, lowest %d" % (RETRYING_HEAP, health.heap_free,
                                                                           health.heap_min))
    finally:
        observer.close()
    _wait_log(tls_broker, r"New client connected from 127\.0\.0\.1:\d+ as %s-%s " % (FLEET, device))
