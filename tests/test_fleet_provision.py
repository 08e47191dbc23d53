"""`fleet provision` and `fleet sync` logic: ids, the broker's address, who may claim an id or a board,
plausible readings, the identity file, the order of the steps against an in-memory board (what is
written where when a step fails), and the end-to-end check against a real Mosquitto running the fleet's
generated files with a scripted device. On emulated boards: hil_tests/test_fleet_provision.py."""

from __future__ import annotations

import ast
import datetime
import ipaddress
import json
import threading
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import fleet.flash
import fleet.provision
from agent.identity import parse as parse_identity
from fleet.board_session import BoardSession
from fleet.broker import ops_secret, run_broker, write_broker_files
from fleet.broker_address import (
    BrokerAddress,
    BrokerUnreachable,
    default_broker,
    parse_broker_url,
    read_broker_ca,
    with_ca,
)
from fleet.cli.main import main
from fleet.credentials import device_credential, verify_secret
from fleet.errors import FleetError
from fleet.provision import (
    Request,
    check_claim,
    check_device_id,
    default_device_id,
    identity_document,
    implausible,
    provision,
    sense_code,
)
from fleet.registry import open_registry
from fleet.selftest import Expect, Watch, sync
from protocols import messages, topics
from protocols.state import State
from protocols.telemetry import Telemetry
from tests.brokerproc import Broker, free_port

UID = "240ac4abcdef"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("FLEET_HOME", str(folder))
    monkeypatch.delenv("FLEET_BROKER", raising=False)
    return folder


# -- ids, broker address, claims ----------------------------------------------------------------------

def test_default_ids_and_their_checks():
    assert default_device_id("water-level", "240AC4ABCDEF") == "wl-abcdef"
    assert default_device_id("manhole-tilt", UID) == "mh-abcdef"
    assert default_device_id("wind-load", UID) == "wd-abcdef"
    assert check_device_id("wl-7") == "wl-7"
    for bad in ("WL-7", "-wl", "wl/7", "x" * 33, ""):
        with pytest.raises(FleetError, match="bad device id"):
            check_device_id(bad)


@pytest.mark.parametrize("url, expected", [
    ("mqtt://10.0.0.5:1884", BrokerAddress("10.0.0.5", 1884, False)),
    ("broker.city.example", BrokerAddress("broker.city.example", 1883, False)),
    ("mqtts://broker.city.example", BrokerAddress("broker.city.example", 8883, True)),
    ("127.0.0.1:2000", BrokerAddress("127.0.0.1", 2000, False)),
])
def test_broker_urls(url, expected):
    assert parse_broker_url(url) == expected
    assert parse_broker_url(str(expected)) == expected


@pytest.mark.parametrize("url", ["http://x:1", "mqtt://", "mqtt://x:notaport", "mqtt://u:p@x:1", "mqtt://x:1/path"])
def test_bad_broker_urls(url):
    with pytest.raises(FleetError, match="bad broker URL"):
        parse_broker_url(url)


def test_the_default_broker_is_the_configured_listener_or_fleet_broker(home, monkeypatch):
    with pytest.raises(FleetError, match="no broker configured for this fleet: run `fleet broker config`"):
        default_broker()
    registry = open_registry()
    write_broker_files(registry, port=18830, bind="10.1.2.3")
    assert default_broker() == BrokerAddress("10.1.2.3", 18830)
    write_broker_files(registry, bind="0.0.0.0")  # the port is kept
    with pytest.raises(FleetError, match="listens on all addresses .*--broker mqtt://HOST:18830"):
        default_broker()
    monkeypatch.setenv("FLEET_BROKER", "mqtt://broker.city.example:1999")
    assert default_broker() == BrokerAddress("broker.city.example", 1999)


def add(registry, device_id, uid, state, kind="water-level"):
    _, credential = device_credential(device_id)
    registry.add({"id": device_id, "kind": kind, "site": "Quay 3", "uid": uid, "credential": credential,
                  "state": state})


def test_who_may_claim_an_id_or_a_board(home):
    registry = open_registry()
    assert check_claim(registry, "wl-new", UID) is None
    add(registry, "wl-pending", UID, "pending-selftest")
    assert check_claim(registry, "wl-pending", UID)["id"] == "wl-pending"  # a rerun on the same board
    with pytest.raises(FleetError, match=r"board 240ac4abcdef is already being provisioned as device wl-pending "
                                         r"\(pending-selftest\): rerun with --id wl-pending"):
        check_claim(registry, "wl-other", UID)
    with pytest.raises(FleetError, match=r"device id 'wl-pending' is already in the registry \(water-level at "
                                         r"Quay 3, pending-selftest\); choose another --id"):
        check_claim(registry, "wl-pending", "240ac4000000")  # another board
    add(registry, "wl-live", "240ac4111111", "active")
    with pytest.raises(FleetError, match="already provisioned on this board and active"):
        check_claim(registry, "wl-live", "240ac4111111")
    with pytest.raises(FleetError, match=r"board 240ac4111111 is already device wl-live \(active\); retire it"):
        check_claim(registry, "wl-else", "240ac4111111")
    registry.update("wl-live", state="retired")
    assert check_claim(registry, "wl-else", "240ac4111111") is None  # a retired device frees its board
    with pytest.raises(FleetError, match="already in the registry"):
        check_claim(registry, "wl-live", "240ac4111111")  # but never its id


# -- readings and identity ----------------------------------------------------------------------------

def test_plausible_readings():
    assert implausible("manhole-tilt", {"tilt": 0.1, "accel": 9.81}, {}, []) == []
    assert implausible("manhole-tilt", {"tilt": 12.0, "accel": 9.81}, {}, []) == [
        "tilt 12.0 deg right after calibration (the cover moved?)"]
    assert implausible("manhole-tilt", {"accel": 9.81}, {}, ["lis3dh_io", "lis3dh_io"]) == [
        "no tilt reading in 5 samples (sensor faults: lis3dh_io)"]
    assert implausible("water-level", {"dist": 2500.0, "level": 0.0}, {"mount_mm": 2500}, []) == []
    assert implausible("water-level", {"dist": 3100.0, "level": 0.0}, {"mount_mm": 2750}, []) == [
        "the ranger sees 3100 mm, farther than the mount height 2750 mm"]
    assert implausible("water-level", {"dist": 9000.0, "level": 0.0}, {"mount_mm": 9000}, []) == [
        "distance 9000 mm is outside the ranger's 30..4500 mm"]
    assert implausible("wind-load", {"wind": 3.0, "load": 1.5}, {"tare": 1200.0}, []) == []
    assert implausible("wind-load", {"wind": 3.0}, {"wind_factor": 0.667}, []) == []  # no load cell fitted
    assert implausible("wind-load", {"wind": 3.0, "load": 9000.0}, {"tare": 1.0}, []) == [
        "load 9000 N right after the tare"]
    assert implausible("wind-load", {"wind": float("nan"), "load": 0.0}, {"tare": 1.0}, []) == [
        "no wind reading in 5 samples"]


def test_the_identity_file_is_what_the_agent_reads():
    doc = identity_document("city", "wl-abcdef", "water-level", BrokerAddress("10.0.0.5", 1884), "s3cret",
                            {"mount_mm": 2750})
    ident = parse_identity(json.loads(json.dumps(doc)))
    assert (ident.fleet, ident.device, ident.kind, ident.host, ident.port, ident.tls) == (
        "city", "wl-abcdef", "water-level", "10.0.0.5", 1884, False)
    assert (ident.user, ident.password, ident.calibration) == ("wl-abcdef", "s3cret", {"mount_mm": 2750})


def test_the_board_side_code_compiles_and_calibrates_only_without_a_calibration():
    measured = sense_code("water-level", None)
    given = sense_code("water-level", {"mount_mm": 2750})
    for code in (measured, given):
        compile(code, "sense", "exec")
    assert "K, C, M = ('water-level', {}, True)" in measured
    assert "K, C, M = ('water-level', {'mount_mm': 2750}, False)" in given


# -- the steps, on an in-memory board -----------------------------------------------------------------

SENSED = {"cal": {"mount_mm": 2501}, "values": {"dist": 2499.0, "level": 0.2}, "faults": []}


class FakeBoard:
    """What provision() uses of a BoardSession, over a dict of files; records resets and code runs."""

    def __init__(self, answer=None, fail_write: bool = False):
        self.files: dict[str, bytes] = {}
        self.events: list[str] = []
        self.answer = answer or SENSED
        self.fail_write = fail_write
        self.broken = False
        self.port, self.baud = "fake://board", 115200

    def identify(self) -> dict:
        return {"uid": UID, "micropython": "1.29.0", "mpy": "6.3", "platform": "linux", "flash_block": 4096,
                "flash_total": 2 << 20, "flash_free": 1 << 20, "slot": "a", "app_version": "0.1.0"}

    def eval_code(self, code: str) -> dict:
        """The canned answer; a calibration given in the code comes back as the board would return it."""
        self.events.append("sense")
        line = next(line for line in code.splitlines() if line.startswith("K, C, M = "))
        kind, given, measure = ast.literal_eval(line.partition(" = ")[2])
        return self.answer if measure or "cal" not in self.answer else {**self.answer, "cal": given}

    def write_file_atomic(self, path: str, data: bytes) -> None:
        if self.fail_write:
            self.broken = True
            raise FleetError("the board on fake://board stopped answering while sending files")
        self.files[path] = data
        self.events.append("write " + path)

    def soft_reset(self) -> None:
        self.events.append("soft_reset")

    def hard_reset(self) -> None:
        self.events.append("hard_reset")
        self.broken = True

    def close(self) -> None:
        self.broken = False  # the next open is a new session


@pytest.fixture
def board(home, monkeypatch) -> FakeBoard:
    made = FakeBoard()

    def fake_flash(session, bundle, observer=None, ident=None):
        session.events.append("flash")
        return {"up_to_date": True, "slot": "a", "sent": [], "copied": [], "bytes_sent": 0, "seconds": 0.1}

    monkeypatch.setattr(BoardSession, "open", staticmethod(lambda port, baud=115200, boot_timeout=5.0: made))
    monkeypatch.setattr(fleet.flash, "flash", fake_flash)
    monkeypatch.setattr(fleet.provision, "RESTART_SETTLE_S", 0)
    return made


def request(**changes) -> Request:
    fields = {"port": "fake://board", "kind": "water-level", "site": "Harbour Rd 12",
              "broker": BrokerAddress("127.0.0.1", free_port()), "timeout": 2.0}  # nothing listens there
    return Request(**{**fields, **changes})


def test_broker_down_records_everything_and_leaves_the_check_pending(board, home):
    seen = []
    outcome = provision(request(lat=53.5), seen.append)
    assert outcome.result == "PENDING" and outcome.device_id == "wl-abcdef"
    assert [c.name for c in seen] == ["board", "agent", "calibration", "sensor", "registry", "identity", "broker",
                                      "restart", "end-to-end"]
    assert seen[-1].status == "PENDING" and "run `fleet sync`" in seen[-1].fix
    assert board.events == ["flash", "sense", "write /device.json", "hard_reset"]
    doc = json.loads(board.files["/device.json"])
    record = open_registry().get("wl-abcdef")
    assert (record["state"], record["uid"], record["lat"], record["calibration"]) == (
        "pending-selftest", UID, 53.5, {"mount_mm": 2501})
    assert [e["action"] for e in record["history"]] == ["registered", "provisioning", "identity written",
                                                        "selftest pending"]
    # The secret is on the board; the registry and the broker's passwd hold only its hash.
    hashed = dict(line.split(":", 1) for line in (home / "broker" / "passwd").read_text().splitlines())
    assert verify_secret(doc["password"], hashed["wl-abcdef"])
    assert doc["password"] not in (home / "registry.json").read_text()
    assert doc["password"] not in json.dumps(outcome.as_dict())


def test_a_rerun_on_the_same_board_takes_the_record_over_with_a_new_credential(board, home):
    provision(request())
    first = json.loads(board.files["/device.json"])["password"]
    outcome = provision(request(kind="water-level", site="Harbour Rd 14", mount_mm=2750))
    assert outcome.result == "PENDING"
    second = json.loads(board.files["/device.json"])
    assert second["password"] != first and second["calibration"] == {"mount_mm": 2750}
    record = open_registry().get("wl-abcdef")
    assert record["site"] == "Harbour Rd 14" and "reprovisioning" in [e["action"] for e in record["history"]]
    hashed = dict(line.split(":", 1) for line in (home / "broker" / "passwd").read_text().splitlines())
    assert verify_secret(second["password"], hashed["wl-abcdef"]) and not verify_secret(first, hashed["wl-abcdef"])


def test_a_duplicate_id_is_refused_before_the_board_is_written(board, home):
    add(open_registry(), "wl-taken", "240ac4000000", "active")
    before = (home / "registry.json").read_bytes()
    with pytest.raises(FleetError) as refused:
        provision(request(device_id="wl-taken"))
    assert str(refused.value).endswith("choose another --id; the board and the registry are unchanged")
    assert board.events == ["soft_reset"] and board.files == {}  # its old agent runs again
    assert (home / "registry.json").read_bytes() == before


def test_a_calibration_fault_is_a_fail_and_nothing_is_registered(board, home):
    board.answer = {"error": "level_calibration", "detail": "level_calibration: 0 of 9 readings in 5000 ms",
                    "faults": []}
    outcome = provision(request())
    assert outcome.result == "FAIL"
    failed = outcome.checks[-1]
    assert (failed.name, failed.status) == ("calibration", "FAIL")
    assert failed.detail.startswith("level_calibration: 0 of 9 readings") and "--mount-height" in failed.fix
    assert board.events == ["flash", "sense", "soft_reset"] and board.files == {}
    assert open_registry().all() == []


def test_an_identity_that_does_not_reach_the_board_says_where_things_stand(board, home):
    board.fail_write = True
    with pytest.raises(FleetError) as failed:
        provision(request())
    assert str(failed.value) == (
        "the board on fake://board stopped answering while sending files; device wl-abcdef is registered as "
        "'provisioning' but its identity may not have reached the board; rerun the same command: it takes the "
        "record over with a new credential")
    assert open_registry().get("wl-abcdef")["state"] == "provisioning"
    board.fail_write = False
    assert provision(request()).result == "PENDING"  # the rerun finishes it


def test_mount_height_is_for_water_level_only(board):
    with pytest.raises(FleetError, match="--mount-height is for water-level devices"):
        provision(request(kind="wind-load", mount_mm=2000))
    assert board.events == []


# -- the end-to-end check against a real broker ---------------------------------------------------------

class ScriptedDevice:
    """A device on the broker under its own credential: at every rebirth it publishes its birth and a
    telemetry message of boot `boot` (or only the birth, or with another firmware)."""

    def __init__(self, port: int, device_id: str, secret: str, boot: int = 3, firmware: str = "0.1.0",
                 telemetry: bool = True, kind: str = "water") -> None:
        self.device_id, self.boot, self.firmware, self.kind, self.send_telemetry = (
            device_id, boot, firmware, kind, telemetry)
        self.rebirths = 0
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="city-" + device_id)
        self.client.username_pw_set(device_id, secret)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("cmd/city/%s/+" % device_id, 1)
        self.client.on_subscribe = lambda c, u, mid, r, p: self.subscribed.set()
        self.client.on_message = self._command
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _command(self, client, userdata, message) -> None:
        command = messages.decode(topics.parse(message.topic), message.payload)
        assert command.KIND == "rebirth"
        self.rebirths += 1
        self.announce(wait=False)  # paho's network thread runs this: it cannot wait for its own acks

    def announce(self, wait: bool = True) -> None:
        """Publish the birth (retained) and, unless told not to, telemetry; `wait` for the broker's acks."""
        up = "dt/city/%s/" % self.device_id
        birth = State(self.boot, 2 * self.rebirths, True, self.firmware, 0, 1, self.kind)
        sent = [self.client.publish(up + "state", messages.encode(birth), 1, retain=True)]
        if self.send_telemetry:
            reading = Telemetry(self.boot, 2 * self.rebirths + 1, [{0: "level", 2: 12}])
            sent.append(self.client.publish(up + "telemetry", messages.encode(reading), 1))
        for info in sent if wait else []:
            info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mosquitto(home):
    """The fleet's generated files with two pending water-level devices, Mosquitto running them."""
    registry = open_registry()
    secrets = {}
    for device_id in ("wl-1", "wl-2"):
        secrets[device_id], credential = device_credential(device_id)
        registry.add({"id": device_id, "kind": "water-level", "site": "Quay", "credential": credential,
                      "firmware": "0.1.0", "state": "pending-selftest"})
    files = write_broker_files(registry, port=free_port())
    proc = run_broker(files.folder)
    devices: list[ScriptedDevice] = []

    def device(device_id: str, **options) -> ScriptedDevice:
        made = ScriptedDevice(files.port, device_id, secrets[device_id], **options)
        devices.append(made)
        return made

    yield BrokerAddress("127.0.0.1", files.port), device
    for made in devices:
        made.close()
    proc.kill()
    proc.wait(timeout=10)


def test_a_device_passes_once_its_birth_and_telemetry_of_one_boot_arrive(mosquitto):
    address, device = mosquitto
    wl1 = device("wl-1")
    with Watch(address, "city", {"wl-1": Expect("water-level", "0.1.0")}, ops_secret(), rebirth_every=0.2) as watch:
        watch.open()
        result = watch.wait(10)["wl-1"]
    assert result.passed and result.boot == 3 and wl1.rebirths >= 1
    assert [(c.name, c.status) for c in result.checks(10)] == [("birth", "PASS"), ("telemetry", "PASS")]
    assert result.checks(10)[1].detail == "level 12 mm"


def test_a_stale_birth_a_wrong_firmware_or_no_telemetry_fail(mosquitto):
    address, device = mosquitto
    stale = device("wl-1", boot=1, telemetry=False)
    stale.announce()  # an earlier boot: its retained birth stays after it went away
    stale.close()
    device("wl-2", firmware="0.0.9")
    expected = {"wl-1": Expect("water-level", "0.1.0"), "wl-2": Expect("water-level", "0.1.0")}
    with Watch(address, "city", expected, ops_secret(), rebirth_every=0.2) as watch:
        watch.open()
        results = watch.wait(1.5)
    wl1, wl2 = results["wl-1"], results["wl-2"]
    assert not wl1.passed and not wl2.passed
    assert wl1.checks(1.5)[1].detail == "the device is online but sent no telemetry of boot 1 within 2 s"
    assert wl2.checks(1.5)[0].detail == "it runs firmware 0.0.9, not 0.1.0"


def test_an_unreachable_broker_and_a_foreign_broker(mosquitto, home):
    address, _ = mosquitto
    with Watch(BrokerAddress("127.0.0.1", free_port()), "city", {"wl-1": Expect("water-level")}, "x") as watch:
        with pytest.raises(BrokerUnreachable, match="cannot reach the broker at mqtt://127.0.0.1:"):
            watch.open()
    with Watch(address, "city", {"wl-1": Expect("water-level")}, "not-the-ops-secret") as watch:
        with pytest.raises(FleetError, match="refused the fleet's own account fleet-ops"):
            watch.open()


def test_sync_activates_the_devices_that_pass_and_keeps_the_rest_pending(mosquitto, home):
    address, device = mosquitto
    device("wl-1")
    outcome = sync(address, timeout=1.5)
    assert outcome.result == "FAIL"
    assert {d: status for d, (status, _) in outcome.devices.items()} == {"wl-1": "PASS", "wl-2": "FAIL"}
    registry = open_registry()
    assert registry.get("wl-1")["state"] == "active"
    assert registry.get("wl-2")["state"] == "pending-selftest"
    assert registry.get("wl-2")["history"][-1]["action"] == "selftest failed"
    device("wl-2")
    again = sync(address, timeout=10)
    assert again.result == "PASS" and list(again.devices) == ["wl-2"]
    assert registry.get("wl-2")["state"] == "active"
    assert sync(address, timeout=1).devices == {}


def test_a_port_without_micropython_is_one_line_and_changes_nothing(home, monkeypatch):
    def no_repl(port, baud=115200, boot_timeout=5.0):
        raise FleetError("no MicroPython REPL answered on %s (it sent '$GPGGA,092750.000'): is it a MicroPython "
                         "board on the right port?" % port)

    monkeypatch.setattr(BoardSession, "open", staticmethod(no_repl))
    with pytest.raises(FleetError) as refused:
        provision(request())
    assert str(refused.value).startswith("no MicroPython REPL answered on fake://board")
    assert "unchanged" not in str(refused.value)  # nothing was opened: no state to report
    assert open_registry().all() == []


# -- a TLS broker: its CA in the identity and in the self-test ----------------------------------------

class Pki(NamedTuple):
    """A test CA, the broker's certificate it signed, and a CA that signed nothing of ours."""

    ca_pem: str
    other_pem: str
    ca_file: Path
    other_file: Path
    broker_files: tuple[Path, Path, Path]  # cafile, certfile, keyfile: tests.brokerproc.Broker(tls=...)


def _certificate(subject: str, key, issuer: str, issuer_key, extension) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
    return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(extension, critical=False).sign(issuer_key, hashes.SHA256()))


def make_pki(folder: Path) -> Pki:
    """Write a CA, another CA and the broker's key and certificate (for 127.0.0.1 and broker.test) to `folder`."""
    pem = lambda cert: cert.public_bytes(serialization.Encoding.PEM).decode()  # noqa: E731
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    authority = x509.BasicConstraints(ca=True, path_length=None)
    ca = _certificate("cityfleet test CA", keys[0], "cityfleet test CA", keys[0], authority)
    other = _certificate("some other CA", keys[1], "some other CA", keys[1], authority)
    names = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("broker.test")])
    server = _certificate("broker", keys[2], "cityfleet test CA", keys[0], names)
    files = {name: folder / name for name in ("ca.pem", "other.pem", "broker.pem", "broker.key")}
    files["ca.pem"].write_text(pem(ca))
    files["other.pem"].write_text(pem(other))
    files["broker.pem"].write_text(pem(server))
    files["broker.key"].write_bytes(keys[2].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return Pki(pem(ca), pem(other), files["ca.pem"], files["other.pem"],
               (files["ca.pem"], files["broker.pem"], files["broker.key"]))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_a_tls_identity_carries_the_ca_as_pem_and_the_agent_reads_it(pki, tmp_path):
    # A file as exported from a PKI: a comment, two CAs, and a key that must not reach the board.
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("subject=CN = cityfleet test CA\n" + pki.ca_pem + key + pki.other_pem.replace("\n", "\r\n"))
    broker = with_ca(parse_broker_url("mqtts://broker.city.example"), str(bundle))
    assert broker.ca == pki.ca_pem + pki.other_pem  # the certificates only, as PEM
    assert hash(broker) == hash(with_ca(parse_broker_url("mqtts://broker.city.example"), str(bundle)))
    assert "BEGIN" not in repr(broker) and str(broker) == "mqtts://broker.city.example:8883"
    doc = identity_document("city", "wl-abcdef", "water-level", broker, "s3cret", {"mount_mm": 2750})
    assert doc["broker"] == {"host": "broker.city.example", "port": 8883, "tls": True, "ca": broker.ca}
    ident = parse_identity(json.loads(json.dumps(doc)))
    assert (ident.tls, ident.server_name) == (True, "broker.city.example")
    assert ident.ca == [x509.load_pem_x509_certificate(p.encode()).public_bytes(serialization.Encoding.DER)
                        for p in (pki.ca_pem, pki.other_pem)]
    named = BrokerAddress("10.0.0.5", 8883, True, pki.ca_pem, "broker.city.example")
    doc = identity_document("city", "wl-abcdef", "water-level", named, "s3cret", {})
    assert parse_identity(json.loads(json.dumps(doc))).server_name == "broker.city.example"
    assert "ca" not in BrokerAddress("10.0.0.5", 1883).for_device()


def test_the_ca_file_is_checked(pki, tmp_path):
    with pytest.raises(FleetError, match=r"cannot read the broker CA file .*nope.pem \(No such file or directory\); "
                                         r"--broker-ca needs the CA certificate\(s\), in PEM"):
        read_broker_ca(str(tmp_path / "nope.pem"))
    der = tmp_path / "ca.der"
    der.write_bytes(x509.load_pem_x509_certificate(pki.ca_pem.encode()).public_bytes(serialization.Encoding.DER))
    for bad in (der, pki.broker_files[2]):  # DER, and a key but no certificate
        with pytest.raises(FleetError, match="holds no PEM certificate"):
            read_broker_ca(str(bad))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_provision_over_tls_writes_the_ca_into_the_identity(board, home, pki, capsys):
    port = free_port()  # nothing listens there: the check stays pending
    code, out, err = cli(capsys, "provision", "--port", "fake://board", "--kind", "water-level", "--site", "Quay",
                         "--broker", "mqtts://127.0.0.1:%d" % port, "--broker-ca", str(pki.ca_file), "--timeout", "2")
    assert code == 0 and "cannot reach the broker at mqtts://127.0.0.1:%d" % port in out, out + err
    doc = json.loads(board.files["/device.json"])
    assert doc["broker"] == {"host": "127.0.0.1", "port": port, "tls": True, "ca": pki.ca_pem}
    assert parse_identity(doc).ca  # the node accepts it


TLS, PLAIN = "mqtts://127.0.0.1:8883", "mqtt://127.0.0.1:1883"
NO_CA = "fleet: mqtts://127.0.0.1:8883 is a TLS broker: pass --broker-ca FILE (or set FLEET_BROKER_CA), the CA "
UNUSED = "fleet: --broker-ca is for a TLS broker, but mqtt://127.0.0.1:1883 is plain MQTT and would not use it"


@pytest.mark.parametrize("options, env, says", [  # {tmp}: the test's folder, {ca}: the test CA's file
    (["--broker", TLS], {}, NO_CA),
    ([], {"FLEET_BROKER": TLS}, NO_CA),
    (["--broker", TLS, "--broker-ca", "{tmp}/missing.pem"], {}, "fleet: cannot read the broker CA file "),
    (["--broker", TLS, "--broker-ca", "{tmp}/notes.txt"], {}, "fleet: {tmp}/notes.txt holds no PEM certificate"),
    (["--broker", PLAIN, "--broker-ca", "{ca}"], {}, UNUSED),
    (["--broker", PLAIN], {"FLEET_BROKER_CA": "{ca}"}, UNUSED),
])
def test_a_tls_broker_without_its_ca_or_a_ca_for_a_plain_one_is_one_line(options, env, says, board, home, pki,
                                                                          tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("ask Jo for the CA\n")
    fill = {"tmp": tmp_path, "ca": pki.ca_file}
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**fill))
    typed = ["provision", "--port", "fake://board", "--kind", "water-level", "--site", "Quay"]
    for argv in (typed, ["sync"]):
        code, out, err = cli(capsys, *argv, *[option.format(**fill) for option in options])
        assert (code, out) == (3, "") and err.startswith(says.format(**fill)) and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert board.events == [] and open_registry().all() == []  # refused before the board was touched


@pytest.fixture(scope="module")
def tls_broker(pki, tmp_path_factory):
    """Mosquitto with a plain listener (for a scripted device) and a TLS one signed by the test CA."""
    users = {"fleet-ops": "ops-secret", "wl-1": "wl-1-secret"}
    with Broker(tmp_path_factory.mktemp("mosquitto-tls"), users=users, tls=pki.broker_files) as broker:
        yield broker


def test_the_self_test_checks_the_broker_against_the_given_ca(tls_broker, pki):
    device = ScriptedDevice(tls_broker.port, "wl-1", "wl-1-secret")
    try:
        address = BrokerAddress("127.0.0.1", tls_broker.tls_port, True, pki.ca_pem)
        with Watch(address, "city", {"wl-1": Expect("water-level")}, "ops-secret", rebirth_every=0.2) as watch:
            watch.open()
            assert watch.wait(10)["wl-1"].passed
    finally:
        device.close()
    refused = [(BrokerAddress("127.0.0.1", tls_broker.tls_port, True, pki.other_pem),
                "presented a certificate that does not verify against the CA given (", "pass --broker-ca FILE"),
               (BrokerAddress("127.0.0.1", tls_broker.tls_port, True, pki.ca_pem, "elsewhere.example"),
                "presented a certificate for another name (Hostname mismatch", "give the broker by a name")]
    for address, why, fix in refused:
        with Watch(address, "city", {"wl-1": Expect("water-level")}, "ops-secret") as watch:
            with pytest.raises(FleetError) as failed:
                watch.open()
        assert not isinstance(failed.value, BrokerUnreachable)  # not pending: the node would refuse it too
        said = str(failed.value)
        assert said.startswith("the broker at mqtts://127.0.0.1:%d %s" % (tls_broker.tls_port, why)) and fix in said
    named = BrokerAddress("127.0.0.1", tls_broker.tls_port, True, pki.ca_pem, "broker.test")
    with Watch(named, "city", {"wl-1": Expect("water-level")}, "ops-secret") as watch:
        watch.open()  # the certificate names broker.test: checked against that, not the address dialled


def test_a_broker_the_ca_does_not_verify_is_refused_before_the_board_is_touched(board, home, tls_broker, pki):
    wrong = BrokerAddress("127.0.0.1", tls_broker.tls_port, True, pki.other_pem)
    with pytest.raises(FleetError, match="presented a certificate that does not verify against the CA given"):
        provision(request(broker=wrong))
    assert board.events == [] and board.files == {} and open_registry().all() == []
