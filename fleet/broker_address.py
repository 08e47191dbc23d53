"""What a broker address is and how the fleet connects to it securely: `BrokerAddress` (host, port, TLS, the
CA its certificate chains to), read from --broker/--broker-ca, FLEET_BROKER or the saved listener, and the
TLS checks a node would make of it, with the one-line FleetError that says what to do when they fail.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fleet.errors import FleetError

CONNECT_TIMEOUT = 5.0
DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883
NAME_MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is, as a device reaches it (and the fleet, for the self-test). With tls: `ca`, the
    PEM text of the CA certificate(s) its certificate must chain to, and `server_name`, the name that
    certificate must carry when it is not `host`."""

    host: str
    port: int
    tls: bool = False
    ca: str | None = field(default=None, repr=False)
    server_name: str | None = None

    def __str__(self) -> str:
        return "%s://%s:%d" % ("mqtts" if self.tls else "mqtt", self.host, self.port)

    def for_device(self) -> dict[str, Any]:
        """The `broker` object of the board's /device.json (agent/identity.py)."""
        broker: dict[str, Any] = {"host": self.host, "port": self.port, "tls": self.tls}
        if self.tls:
            broker["ca"] = self.ca
            if self.server_name:
                broker["server_name"] = self.server_name
        return broker

    def tls_context(self) -> ssl.SSLContext:
        """A client context that checks the broker's certificate as the node does: chained to `ca` (the
        system's CAs when there is none) and valid for `server_name`, else `host`."""
        context = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
        context.server_name = self.server_name or self.host
        if self.ca is None:
            context.load_default_certs()
        else:
            context.load_verify_locations(cadata=self.ca)
        return context


class _NamedContext(ssl.SSLContext):
    """Checks the peer against `server_name` whatever host was dialled (paho names the host it connects to;
    asyncio, for the ingest's gmqtt, wraps a BIO instead of a socket)."""

    server_name = ""

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)

    def wrap_bio(self, incoming: Any, outgoing: Any, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = self.server_name
        return super().wrap_bio(incoming, outgoing, *args, **kwargs)


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]`, `mqtts://host[:port]` or `host[:port]` -> BrokerAddress; FleetError if bad."""
    from urllib.parse import urlsplit

    text = url.strip()
    split = urlsplit(text if "://" in text else "mqtt://" + text)
    if split.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise FleetError("bad broker URL %r: use mqtt://HOST:PORT or mqtts://HOST:PORT" % url)
    tls = split.scheme in ("mqtts", "ssl")
    try:
        port = split.port
    except ValueError:
        port = -1
    if not split.hostname or port == -1 or split.path not in ("", "/") or split.username:
        raise FleetError("bad broker URL %r: use mqtt://HOST:PORT or mqtts://HOST:PORT" % url)
    return BrokerAddress(split.hostname, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), tls)


def default_broker(home: Path | None = None) -> BrokerAddress:
    """The broker of this fleet: $FLEET_BROKER, else the listener `fleet broker config` saved."""
    import json

    from fleet.broker import SETTINGS_FILE, broker_dir

    if os.environ.get("FLEET_BROKER"):
        return parse_broker_url(os.environ["FLEET_BROKER"])
    path = broker_dir(home) / SETTINGS_FILE
    try:
        saved = json.loads(path.read_text())
        port, bind = int(saved["port"]), str(saved["bind"])
    except (OSError, ValueError, KeyError, TypeError):
        raise FleetError("no broker configured for this fleet: run `fleet broker config`, or give --broker "
                         "mqtt://HOST:PORT (or set FLEET_BROKER)") from None
    if bind in ("0.0.0.0", "::", ""):
        # A wildcard listener says nothing about the address the boards reach it at.
        raise FleetError("the broker listens on all addresses (%s): give the address the boards reach it at "
                         "with --broker mqtt://HOST:%d (or FLEET_BROKER)" % (bind or "*", port))
    return BrokerAddress(bind, port)


def read_broker_ca(path: str) -> str:
    """The CA certificate(s) in the PEM file `path`, as PEM text with nothing else (no key, no comments)
    for the identity file; FleetError naming the file when it cannot be read or holds no certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    wanted = "--broker-ca needs the CA certificate(s), in PEM, that signed the broker's certificate"
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise FleetError("cannot read the broker CA file %s (%s); %s" % (path, error.strerror or error, wanted)) from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise FleetError("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----); %s" % (path, wanted)) from None
    return "".join(cert.public_bytes(Encoding.PEM).decode() for cert in certificates)


def with_ca(broker: BrokerAddress, ca_file: str | None) -> BrokerAddress:
    """`broker` with the CA read from `ca_file` (--broker-ca); FleetError when a TLS broker has no CA
    or a plain one is given one (it would go unused)."""
    if ca_file is None:
        return require_ca(broker)
    if not broker.tls:
        raise FleetError("--broker-ca is for a TLS broker, but %s is plain MQTT and would not use it: give the "
                         "broker as mqtts://HOST:PORT, or drop --broker-ca (and FLEET_BROKER_CA)" % broker)
    return replace(broker, ca=read_broker_ca(ca_file))


def broker_from_options(url: str | None, ca_file: str | None, need_ca: bool = False,
                        home: Path | None = None) -> BrokerAddress | None:
    """The broker of --broker and --broker-ca, checked; None (the fleet's default, resolved when needed)
    when neither was given. With `need_ca` (a node's identity) a TLS broker must come with its CA; without
    it and without --broker-ca the fleet's own connection trusts the system's CAs."""
    if url is None and ca_file is None:
        return None
    broker = parse_broker_url(url) if url else default_broker(home)
    if ca_file is None and not need_ca:
        return broker
    return with_ca(broker, ca_file)


def require_ca(broker: BrokerAddress) -> BrokerAddress:
    """`broker`, unless it is a TLS broker without its CA (FleetError): a node refuses such an identity."""
    if broker.tls and broker.ca is None:
        raise FleetError("%s is a TLS broker: pass --broker-ca FILE (or set FLEET_BROKER_CA), the CA "
                         "certificate(s) in PEM that signed the broker's certificate" % broker)
    return broker


def check_certificate(broker: BrokerAddress) -> None:
    """FleetError when a TLS broker answers with a certificate its CA (or name) does not verify: a node
    given this identity would refuse it. A broker that does not answer is left to the self-test."""
    import socket

    if not broker.tls:
        return
    try:
        with socket.create_connection((broker.host, broker.port), timeout=CONNECT_TIMEOUT) as sock:
            broker.tls_context().wrap_socket(sock).close()
    except ssl.SSLCertVerificationError as error:
        raise FleetError(untrusted(broker, error)) from None
    except OSError:
        pass  # not reachable from here (yet): provisioning goes on, its check stays pending


def untrusted(broker: BrokerAddress, error: ssl.SSLCertVerificationError) -> str:
    """Why the broker's certificate was refused, and what to do about it."""
    why = error.verify_message or str(error)
    if error.verify_code in NAME_MISMATCH:
        return ("the broker at %s presented a certificate for another name (%s): give the broker by a name or "
                "address its certificate carries" % (broker, why))
    against = "the CA given" if broker.ca else "this computer's CAs"
    return ("the broker at %s presented a certificate that does not verify against %s (%s): pass "
            "--broker-ca FILE with the CA that signed the broker's certificate" % (broker, against, why))


class BrokerUnreachable(FleetError):
    """No broker answered at the address: the check stays pending (`fleet sync` completes it)."""
