"""`fleet provision` of an emulated water-level board against a TLS broker, end to end, as the technician
types it: `--broker mqtts://127.0.0.1:PORT --broker-ca ca.pem`. Mosquitto runs the fleet's generated
configuration (passwd, acl, pid file: the fleet reloads it as usual) with a TLS listener added, whose
certificate a test CA signed. The node reaches the broker only over TLS with that CA from its identity,
and the self-test checks the broker with the same CA.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from hil_tests.test_fleet_provision import AGENT_HEAP, FAST, SITE, FleetSite, board_identity
from tests.brokerproc import free_port, wait_port
from tests.test_fleet_provision import make_pki

pytestmark = pytest.mark.hil


class TlsSite(FleetSite):
    """A FleetSite whose Mosquitto also listens with TLS on `tls_port`."""

    def __init__(self, home, fleet_cli, tls_files) -> None:
        super().__init__(home, fleet_cli)
        self.tls_files = tls_files
        self.tls_port = free_port()

    def start(self) -> None:
        folder = self.home / "broker"
        cafile, certfile, keyfile = self.tls_files
        # Last in the file: cafile, certfile and keyfile belong to the listener above them.
        conf = folder / "mosquitto-tls.conf"
        conf.write_text((folder / "mosquitto.conf").read_text() + "listener %d 127.0.0.1\ncafile %s\ncertfile %s\n"
                        "keyfile %s\n" % (self.tls_port, cafile, certfile, keyfile))
        with open(folder / "mosquitto.log", "ab") as log:
            proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                                    stdout=log, stderr=log)
        self.proc = proc  # type: ignore[assignment]  # FleetSite starts without one
        wait_port(self.tls_port, proc=proc)
        # The fleet reloads the broker named by the pid file: it must be this one before provisioning.
        pid_file, deadline = folder / "mosquitto.pid", time.monotonic() + 10
        while not (pid_file.exists() and pid_file.read_text().strip() == str(proc.pid)):
            assert time.monotonic() < deadline, "mosquitto wrote no pid file" + self.log()
            time.sleep(0.05)


@pytest.fixture
def tls_site(tmp_path, fleet_cli):
    made = TlsSite(tmp_path / "home", fleet_cli, make_pki(tmp_path).broker_files)
    yield made
    made.stop()


def test_a_water_level_board_provisions_over_tls_to_pass(tls_site, board_factory, tmp_path):
    tls_site.start()
    board = board_factory("water-level", baud=FAST, heap=AGENT_HEAP)
    device_id = "wl-" + board.uid[-6:]
    result = tls_site.run("provision", "--port", board.port, "--baud", FAST, "--kind", "water-level", "--site", SITE,
                          "--broker", "mqtts://127.0.0.1:%d" % tls_site.tls_port, "--broker-ca", tmp_path / "ca.pem")
    assert result.code == 0, result.stdout + result.stderr + tls_site.log()
    lines = result.stdout.splitlines()
    for name in ("identity", "broker", "restart", "birth", "telemetry"):
        assert any(line.split()[:2] == ["PASS", name] for line in lines), result.stdout
    assert "mqtts://127.0.0.1:%d" % tls_site.tls_port in result.stdout
    assert lines[-1].startswith("PASS: %s is active" % device_id)
    assert tls_site.record(device_id)["state"] == "active"
    identity, _ = board_identity(board)
    assert identity["broker"] == {"host": "127.0.0.1", "port": tls_site.tls_port, "tls": True,
                                  "ca": (tmp_path / "ca.pem").read_text()}
    # Its retained birth is on the broker (read on the plain listener): the node itself came in over TLS.
    birth = tls_site.retained_state(device_id)
    assert birth is not None and birth.online
