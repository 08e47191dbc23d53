"""`--broker-ca` (FLEET_BROKER_CA) for what the fleet runs as fleet-ops: `fleet ping`, `reboot`, `config`
(fleet/commands.py DeviceLink), `fleet ota rollout|abort` (OtaServer) and `fleet ingest` (gmqtt). Mosquitto
has a TLS listener whose certificate the test CA of tests/test_fleet_provision.py signed: each client
connects when given that CA, refuses the broker in one line when given another, and without one trusts
the system's CAs (which do not know the test CA).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import paho.mqtt.publish
import pytest

from fleet.broker import OPS_SECRET_FILE
from fleet.broker_address import BrokerAddress, BrokerUnreachable
from fleet.cli.main import main
from fleet.credentials import OPS_USER
from fleet.errors import FleetError
from fleet.ingest.service import serve, settings_for
from fleet.ota.server import OtaServer
from fleet.registry import open_registry
from protocols import messages
from protocols.state import State
from tests.brokerproc import Broker
from tests.test_fleet_provision import PLAIN, TLS, UNUSED, Pki, make_pki

FLEET, SECRET, BOOT = "city", "ops-secret", 7
UNTRUSTED = "fleet: the broker at mqtts://127.0.0.1:%d presented a certificate that does not verify against %s ("


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(pki, tmp_path_factory):
    """Mosquitto with a plain listener (to publish a device's retained birth) and a TLS one, no ACL."""
    with Broker(tmp_path_factory.mktemp("mosquitto-tls"), users={OPS_USER: SECRET}, tls=pki.broker_files) as made:
        birth = messages.encode(State(BOOT, 1, True, "1.4.2", 0, 1, "water"))
        paho.mqtt.publish.single("dt/%s/wl-1/state" % FLEET, birth, qos=1, retain=True, hostname="127.0.0.1",
                                 port=made.port, auth={"username": OPS_USER, "password": SECRET})
        yield made


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fleet home with device wl-1 and the broker's fleet-ops secret; no broker or CA in the environment."""
    folder = tmp_path / "home"
    monkeypatch.setenv("FLEET_HOME", str(folder))
    for name in ("FLEET_BROKER", "FLEET_BROKER_CA", "FLEET_STORE"):
        monkeypatch.delenv(name, raising=False)
    open_registry(folder).add({"id": "wl-1", "kind": "water-level", "site": "Quay 3", "state": "active"})
    (folder / OPS_SECRET_FILE).write_text(SECRET + "\n")
    return folder


@pytest.fixture(autouse=True)
def ingest_logging():
    """`fleet ingest` adds a handler on the test's stderr to its logger: gone again after the test."""
    logger = logging.getLogger("fleet.ingest")
    saved = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_ping_reaches_a_tls_broker_with_the_ca_given(broker, pki, home, capsys, monkeypatch):
    # No device answers: the error proves the link connected, got the retained birth and had the ping acked.
    silent = ("fleet: no answer from wl-1 within 0.2 s: it may be offline or asleep (its last state: online, boot %d);"
              % BOOT)
    url = "mqtts://127.0.0.1:%d" % broker.tls_port
    code, out, err = cli(capsys, "ping", "wl-1", "--timeout", 0.2, "--broker", url, "--broker-ca", pki.ca_file)
    assert (code, out) == (3, "") and err.startswith(silent) and err.count("\n") == 1, err
    monkeypatch.setenv("FLEET_BROKER", url)
    monkeypatch.setenv("FLEET_BROKER_CA", str(pki.ca_file))
    code, out, err = cli(capsys, "ping", "wl-1", "--timeout", 0.2)
    assert (code, out) == (3, "") and err.startswith(silent), err


@pytest.mark.parametrize("command", [["ping", "wl-1"], ["reboot", "wl-1"], ["config", "wl-1", "--set", "heartbeat=600"]])
def test_a_broker_the_ca_does_not_verify_is_one_line(command, broker, pki, home, capsys):
    url = "mqtts://127.0.0.1:%d" % broker.tls_port
    code, out, err = cli(capsys, *command, "--timeout", 1, "--broker", url, "--broker-ca", pki.other_file)
    assert (code, out) == (3, "") and err.count("\n") == 1, err
    assert err.startswith(UNTRUSTED % (broker.tls_port, "the CA given")) and "pass --broker-ca FILE" in err, err
    # Without --broker-ca the system's CAs check it, as before the option existed: they do not know the test CA.
    code, out, err = cli(capsys, *command, "--timeout", 1, "--broker", url)
    assert (code, out) == (3, "") and err.count("\n") == 1, err
    assert err.startswith(UNTRUSTED % (broker.tls_port, "this computer's CAs")) and "pass --broker-ca FILE" in err, err
    assert open_registry(home).get("wl-1").get("config") is None  # nothing was sent


@pytest.mark.parametrize("command", [["ping", "wl-1"], ["reboot", "wl-1"], ["config", "wl-1", "--set", "heartbeat=600"],
                                     ["ota", "rollout", "1.0.0"], ["ota", "abort", "c-1"], ["ingest"]])
@pytest.mark.parametrize("options, env, says", [  # {tmp}: the test's folder, {ca}: the test CA's file
    (["--broker", TLS, "--broker-ca", "{tmp}/missing.pem"], {}, "fleet: cannot read the broker CA file {tmp}/missing.pem"),
    (["--broker", TLS, "--broker-ca", "{tmp}/notes.txt"], {}, "fleet: {tmp}/notes.txt holds no PEM certificate"),
    (["--broker", PLAIN, "--broker-ca", "{ca}"], {}, UNUSED),
    ([], {"FLEET_BROKER": PLAIN, "FLEET_BROKER_CA": "{ca}"}, UNUSED),
])
def test_a_bad_ca_option_is_one_line(command, options, env, says, pki, home, tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("ask Jo for the CA\n")
    fill = {"tmp": tmp_path, "ca": pki.ca_file}
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**fill))
    code, out, err = cli(capsys, *command, *[option.format(**fill) for option in options])
    assert (code, out) == (3, "") and err.startswith(says.format(**fill)) and err.count("\n") == 1, err


def test_the_ota_server_connects_with_the_ca_given(broker, pki):
    server = OtaServer(FLEET, BrokerAddress("127.0.0.1", broker.tls_port, True, pki.ca_pem), SECRET)
    server.start()  # returns once subscribed, with the retained births
    server.stop()
    assert server.births == {"wl-1": "1.4.2"}
    wrong = OtaServer(FLEET, BrokerAddress("127.0.0.1", broker.tls_port, True, pki.other_pem), SECRET)
    with pytest.raises(FleetError, match="presented a certificate that does not verify against the CA given") as failed:
        wrong.start()
    assert not isinstance(failed.value, BrokerUnreachable)


def ingest_settings(broker: Broker, ca_file: Path, home: Path):
    url = "mqtts://127.0.0.1:%d" % broker.tls_port
    settings = settings_for(url, "sqlite:///%s" % (home / "fleet.db"), home, broker_ca=str(ca_file))
    settings.batch_wait = 0.02
    return settings


def test_the_ingest_stores_from_a_tls_broker_with_the_ca_given(broker, pki, home):
    settings = ingest_settings(broker, pki.ca_file, home)
    assert settings.broker.ca == pki.ca_pem

    async def run() -> object:
        stop = asyncio.Event()
        settings.on_batch = lambda writer: stop.set()  # the retained birth, stored
        return await asyncio.wait_for(serve(settings, stop), 10)

    counters = asyncio.run(run())
    assert (counters.received, counters.stored, counters.quarantined) == (1, 1, 0)


def test_the_ingest_refuses_a_broker_the_ca_does_not_verify(broker, pki, home):
    settings = ingest_settings(broker, pki.other_file, home)
    with pytest.raises(FleetError) as failed:
        asyncio.run(asyncio.wait_for(serve(settings, asyncio.Event()), 10))
    assert str(failed.value).startswith(UNTRUSTED[len("fleet: "):] % (broker.tls_port, "the CA given")), failed.value
