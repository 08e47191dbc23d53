"""`fleet flash` on emulated boards, typed as a technician types it: a blank board, a one-file change, a
power cut and a pulled cable mid-flash, and the bad inputs (another .mpy version, a wrong port, a port
with no MicroPython behind it, a full flash). Most boards run at 460800 baud to keep the suite quick;
the throughput test runs at the 115200 of the field."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import firmware.build
from firmware.build import build_bundle
from fleet.board_session import BoardSession
from fleet.flash import ACTIVE, Bundle, board_layout
from hil_tests.conftest import SerialRepl

pytestmark = pytest.mark.hil

FAST = 460800
#: Boards whose agent must start: the emulator's default heap, 110 KB (an ESP32 without PSRAM).
AGENT_HEAP = None
FLEET = str(Path(sys.executable).with_name("fleet"))


def snapshot_sources(root: Path) -> Path:
    """A copy of the sources a bundle is built from, taken once (the tree may change under us)."""
    src = root / "src"
    for package in ("agent", "protocols", "firmware"):
        shutil.copytree(firmware.build.REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    return src


def build_variant(snapshot: Path, root: Path, name: str, edit=None, version: str = "1.0") -> Path:
    """A bundle built from a copy of `snapshot`, after `edit(copy)` changed some of its sources."""
    src = root / ("src-" + name)
    shutil.copytree(snapshot, src)
    if edit:
        edit(src)
    saved = firmware.build.REPO
    firmware.build.REPO = src  # the build reads its sources from REPO; the .mpy keep relative names
    try:
        build_bundle("emulator", version, root / name)
    finally:
        firmware.build.REPO = saved
    return root / name


def board_files(board) -> dict[str, str]:
    """{path: sha256} of every file on the board."""
    with BoardSession.open(board.port) as session:
        files = session.file_hashes("/")
        session.soft_reset()
    return files


def expected(bundle_dir: Path, slot: str) -> dict[str, str]:
    return {p: hashlib.sha256(data).hexdigest() for p, data in board_layout(Bundle(bundle_dir), slot).items()}


def assert_installed(files: dict[str, str], bundle_dir: Path, slot: str) -> None:
    want = expected(bundle_dir, slot)
    assert {p: files.get(p) for p in want} == want
    assert {p for p in files if p.startswith("/app/%s/" % slot)} == {p for p in want if p.startswith("/app/")
                                                                     and p != ACTIVE}


def boot_output(board, until: bytes = b"\n>>> ") -> bytes:
    """Hard-reset the board; what it prints up to `until` (by default its REPL prompt after main.py)."""
    with SerialRepl(board.port) as repl:
        board.reset(wait=False)
        return repl.read_until(until, timeout=30)


def flash_json(fleet_cli, *args) -> dict:
    result = fleet_cli("flash", *args, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def flash_until(port: str, args: list[str], files_sent: int, then, cwd: Path) -> tuple[int, str]:
    """Run `fleet flash`, call then() once `files_sent` files went over, wait for the end."""
    proc = subprocess.Popen([FLEET, "flash", "--port", port, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if sum(1 for seen in lines if seen.startswith("  sent ")) == files_sent:
            then()
            break
    _, rest = proc.communicate(timeout=60)
    return proc.returncode, "".join(lines) + rest


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """v1; v2 with one source changed; v3 with every agent module changed (a new global in each: bundles are
    built with -O3, which keeps no line numbers, so moved lines alone would not change the bytes)."""
    root = tmp_path_factory.mktemp("bundles")
    snapshot = snapshot_sources(root)
    changed = sorted(p.name for p in (snapshot / "agent").glob("*.py") if p.name != "__init__.py")[0]

    def one_change(src: Path) -> None:
        path = src / "agent" / changed
        path.write_text(path.read_text() + "\nVARIANT = 2\n")

    def all_agent(src: Path) -> None:
        for path in (src / "agent").glob("*.py"):
            path.write_text(path.read_text() + "\nVARIANT = 3\n")

    return {"v1": build_variant(snapshot, root, "v1"), "v2": build_variant(snapshot, root, "v2", one_change, "2.0"),
            "v3": build_variant(snapshot, root, "v3", all_agent, "3.0"),
            "changed": Path("agent/" + changed[:-3] + ".mpy")}


def test_a_blank_board_gets_the_agent_and_it_starts(board_factory, fleet_cli, bundles):
    board = board_factory("manhole-tilt", baud=FAST, heap=AGENT_HEAP)
    assert b"agent:" not in boot_output(board)  # a stock board: no main.py yet
    summary = flash_json(fleet_cli, "--port", board.port, "--baud", FAST, "--bundle", bundles["v1"])
    assert (summary["slot"], summary["previous_slot"], summary["switched"]) == ("a", None, True)
    assert len(summary["sent"]) == len(Bundle(bundles["v1"]).data) and summary["copied"] == []
    files = board_files(board)
    assert_installed(files, bundles["v1"], "a")
    # main.py found the slot and imported the agent from it: no identity yet, so it says so.
    assert b"agent: identity: /device.json not found" in boot_output(board)


def test_reflash_after_one_source_change_sends_only_that_file(board_factory, fleet_cli, bundles, broker):
    board = board_factory("water-level", baud=FAST, heap=AGENT_HEAP)
    flash_json(fleet_cli, "--port", board.port, "--baud", FAST, "--bundle", bundles["v1"])
    identity = {"fleet": "city", "id": "wl-7", "kind": "water-level",
                "broker": {"host": "127.0.0.1", "port": broker.port}}
    with BoardSession.open(board.port) as session:  # as provisioning writes it
        session.write_file_atomic("/device.json", json.dumps(identity).encode())
        session.soft_reset()  # the agent runs, connected to the broker, while we flash again
    summary = flash_json(fleet_cli, "--port", board.port, "--bundle", bundles["v2"])
    assert summary["sent"] == [bundles["changed"].as_posix(), "manifest.json"]  # the manifest has the new hash
    assert len(summary["copied"]) == len(Bundle(bundles["v2"]).data) - 5  # all but those two and the root files
    assert (summary["slot"], summary["previous_slot"], summary["version"]) == ("b", "a", "2.0")
    files = board_files(board)
    assert_installed(files, bundles["v2"], "b")
    assert files["/device.json"] == hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    again = flash_json(fleet_cli, "--port", board.port, "--bundle", bundles["v2"])
    assert again["up_to_date"] and again["sent"] == [] and again["slot"] == "b"


def test_power_cut_mid_flash_leaves_the_old_agent_and_a_rerun_finishes(board_factory, fleet_cli, bundles, tmp_path):
    board = board_factory("manhole-tilt", baud=FAST, heap=AGENT_HEAP)
    flash_json(fleet_cli, "--port", board.port, "--bundle", bundles["v1"])
    code, err = flash_until(board.port, ["--bundle", str(bundles["v3"])], 8, board.power_cut, tmp_path)
    assert code == 3 and err.splitlines()[-1].startswith("fleet: the board on %s stopped answering" % board.port)
    assert "Traceback" not in err
    board.power_on()
    files = board_files(board)
    assert_installed(files, bundles["v1"], "a")  # still the old app, whole, and still the active one
    arrived = [p for p in files if p.startswith("/app/b/") and not p.endswith(".tmp")]
    assert 8 <= len(arrived) < len(Bundle(bundles["v3"]).data) - 3  # part of the new app arrived, not all
    assert b"agent: identity: /device.json not found" in boot_output(board)
    summary = flash_json(fleet_cli, "--port", board.port, "--bundle", bundles["v3"])
    assert summary["kept"] >= 8 and summary["slot"] == "b"  # what arrived before the cut was not sent again
    assert_installed(board_files(board), bundles["v3"], "b")
    assert b"agent: identity: /device.json not found" in boot_output(board)


def test_serial_unplug_mid_flash_is_a_clear_error_and_a_rerun_succeeds(board_factory, fleet_cli, bundles, tmp_path):
    board = board_factory("wind-load", baud=FAST)
    code, err = flash_until(board.port, ["--bundle", str(bundles["v1"])], 5, board.unplug, tmp_path)
    assert code == 3 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("fleet: lost the serial connection to %s while sending files" % board.port)
    board.plug()
    assert b"Traceback" not in boot_output(board)  # root files come last: nothing half-installed runs
    summary = flash_json(fleet_cli, "--port", board.port, "--bundle", bundles["v1"])
    assert summary["kept"] >= 5 and summary["sent"] and summary["slot"] == "a"  # it was cut mid-way
    assert_installed(board_files(board), bundles["v1"], "a")


def test_main_py_without_an_app_says_so_and_stays_at_the_repl(board_factory, bundles):
    board = board_factory("manhole-tilt", baud=FAST)
    with BoardSession.open(board.port) as session:
        for name in ("main.py", "board.py"):
            session.write_file_atomic("/" + name, (bundles["v1"] / name).read_bytes())
        session.soft_reset()
    output = boot_output(board)  # up to the REPL's prompt: main.py returned
    assert b"agent: no app installed; run fleet flash\r\n" in output and b"Traceback" not in output


def test_a_bundle_for_another_mpy_version_is_refused_before_any_write(board_factory, fleet_cli, bundles, tmp_path):
    old = tmp_path / "mpy5"
    shutil.copytree(bundles["v1"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"].endswith(".mpy"):  # the header's version byte, as mpy-cross 1.19 wrote it
            data = bytearray((old / entry["path"]).read_bytes())
            data[1] = 5
            (old / entry["path"]).write_bytes(bytes(data))
            entry["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["mpy"] = "5.0"
    (old / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    board = board_factory("manhole-tilt", baud=FAST)
    before = board_files(board)
    result = fleet_cli("flash", "--port", board.port, "--bundle", old)
    assert result.code == 3
    assert result.stderr.strip() == ("fleet: the bundle holds .mpy v5.0 but the board's MicroPython 1.29.0-preview "
                                     "loads .mpy v6.3: rebuild the bundle for it, or update its firmware")
    assert board_files(board) == before


def test_a_full_flash_is_refused_and_nothing_changes(board_factory, fleet_cli, bundles):
    board = board_factory("manhole-tilt", baud=FAST, flash_size="256k")
    before = board_files(board)
    result = fleet_cli("flash", "--port", board.port, "--bundle", bundles["v1"])
    assert result.code == 3 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("fleet: not enough free flash on the board: this bundle needs ")
    assert board_files(board) == before


def test_a_wrong_port_is_one_clear_line(fleet_cli, tmp_path):
    missing = tmp_path / "ttyUSB7"
    result = fleet_cli("flash", "--port", missing)
    assert (result.code, result.stderr) == (3, "fleet: cannot open %s: no such port; check the port name and the "
                                               "cable\n" % missing)
    refused = fleet_cli("flash", "--port", "socket://127.0.0.1:1")
    assert refused.code == 3 and refused.stderr.startswith("fleet: cannot open socket://127.0.0.1:1: ")
    console = fleet_cli("console", "--port", missing)
    assert console.code == 3 and console.stderr.startswith("fleet: cannot open %s: no such port" % missing)


class GpsReceiver:
    """A serial device that is not MicroPython: a GPS module's pty, sending NMEA sentences and echoing
    what it is sent (as a module in its configuration mode does)."""

    SENTENCE = b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76\r\n"

    def __init__(self, link: Path):
        self.master, slave = os.openpty()
        os.symlink(os.ttyname(slave), link)
        self._slave = slave
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_fix = 0.0
        while not self._stop.is_set():
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    os.write(self.master, os.read(self.master, 256))
                except OSError:
                    pass
            if time.monotonic() >= next_fix:
                next_fix = time.monotonic() + 0.2
                os.write(self.master, self.SENTENCE)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self._slave)


def test_a_port_with_no_micropython_behind_it_is_refused(fleet_cli, tmp_path):
    gps = GpsReceiver(tmp_path / "gps-tty")
    try:
        result = fleet_cli("flash", "--port", tmp_path / "gps-tty")
    finally:
        gps.close()
    assert result.code == 3 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("fleet: no MicroPython REPL answered on %s (it sent " % (tmp_path / "gps-tty"))
    assert "$GPGGA" in result.stderr or "GPGGA" in result.stderr


def test_flash_over_rfc2217_and_the_line_rate_share(board_factory, fleet_cli, bundles):
    board = board_factory("water-level", rfc2217_port=0)  # 115200 baud, as in the field
    summary = flash_json(fleet_cli, "--port", board.rfc2217_url, "--bundle", bundles["v1"])
    assert summary["bytes_sent"] == sum(len(d) for d in Bundle(bundles["v1"]).data.values())
    print("flash throughput at 115200 baud: %d B/s, %.0f%% of the line rate (%d bytes in %.1f s, %.1f s in all)"
          % (summary["bytes_per_second"], 100 * summary["line_share"], summary["bytes_sent"],
             summary["send_seconds"], summary["seconds"]))
    assert summary["line_share"] > 0.6


def test_base_firmware_is_refused_on_an_emulated_board(board_factory, fleet_cli, tmp_path):
    board = board_factory("manhole-tilt", baud=FAST, rfc2217_port=0)
    image = tmp_path / "ESP32_GENERIC.bin"
    image.write_bytes(b"\xe9" + bytes(4095))  # an ESP image header: the port is what is wrong
    before = board_files(board)
    over_pty = fleet_cli("flash", "--port", board.port, "--base-firmware", image, "--erase")
    assert over_pty.code == 3 and over_pty.stderr.startswith("fleet: %s is a pseudo-terminal" % board.port)
    over_url = fleet_cli("flash", "--port", board.rfc2217_url, "--base-firmware", image, "--erase")
    assert over_url.code == 3 and over_url.stderr == (
        "fleet: the board on %s runs MicroPython on 'linux' (an emulated board), not on an ESP32: --base-firmware "
        "writes an ESP32's firmware only\n" % board.rfc2217_url)
    assert board_files(board) == before


def test_board_session_api(board_factory):
    board = board_factory("water-level", baud=FAST)
    with BoardSession.open(board.port) as session:
        ident = session.identify()
        assert (ident["uid"], ident["platform"], ident["mpy"], ident["slot"]) == (board.uid, "linux", "6.3", None)
        assert ident["flash_total"] == 2 * 1024 * 1024 and 0 < ident["flash_free"] < ident["flash_total"]
        assert session.eval("[1 + 1, 'x']") == [2, "x"]
        assert session.exec("print('a')\nprint('b')") == "a\nb\n"
        with pytest.raises(Exception, match=r"^the board raised ZeroDivisionError: divide by zero$"):
            session.exec("1/0")
        data = bytes(range(256)) * 40 + b"\x03\x04\x01 all bytes pass"
        session.write_file_atomic("/cal.bin", data)
        assert session.read_file("/cal.bin") == data
        assert session.file_hashes(["/cal.bin", "/nope"]) == {"/cal.bin": hashlib.sha256(data).hexdigest()}
        session.remove("/cal.bin")
        assert session.file_hashes(["/cal.bin"]) == {}
        with pytest.raises(Exception, match="^cannot read /nope on the board: ENOENT$"):
            session.read_file("/nope")
        resets = board.status()["reset_count"]
        session.hard_reset()
    deadline = time.monotonic() + 15
    while board.status()["reset_count"] == resets or board.status()["last_reset_cause"] != "hard":
        assert time.monotonic() < deadline, "machine.reset() did not reset the board"
        time.sleep(0.05)


def test_a_transfer_abandoned_mid_frame_does_not_lock_the_board_out(board_factory):
    board = board_factory("manhole-tilt", baud=FAST)

    class HostDied(Exception):
        pass

    def die(_n):
        raise HostDied()  # right after the first data frame left: the board waits for the rest

    session = BoardSession.open(board.port)
    with pytest.raises(HostDied):
        session.write_files_atomic([("/big.bin", bytes(5000))], progress=die)
    session.close()
    # The board's receiver has Ctrl-C off and takes whatever comes next as data.
    with BoardSession.open(board.port) as again:
        assert again.eval("1 + 1") == 2
        assert again.file_hashes(["/big.bin"]) == {}  # nothing half-written under the real name
        again.soft_reset()


def test_console_opens_the_repl(board_factory, tmp_path):
    board = board_factory("manhole-tilt", baud=FAST)
    master, slave = os.openpty()  # the technician's terminal
    proc = subprocess.Popen([FLEET, "console", "--port", board.port], stdin=slave, stdout=slave, stderr=slave,
                            cwd=tmp_path)
    os.close(slave)
    screen = b""

    def expect(text: bytes, timeout: float = 15) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while text not in screen:
            assert time.monotonic() < deadline, "no %r on the console; it shows %r" % (text, screen[-300:])
            if select.select([master], [], [], 0.1)[0]:
                screen += os.read(master, 4096)

    try:
        expect(b"Use Ctrl-] or Ctrl-x to exit this shell")
        os.write(master, b"print(6 * 7)\r")
        expect(b"42\r\n>>> ")
        os.write(master, b"\x1d")  # Ctrl-]
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
