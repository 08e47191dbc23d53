"""Faults from outside: hard reset, power cut mid-write, USB unplug, RFC 2217 auto-reset, restarts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import serial
from littlefs import LittleFS

from hil_tests.conftest import SerialRepl
from tools.boardemu.api import EmulatedBoard

pytestmark = pytest.mark.hil


def read_flash(image: Path) -> dict[str, bytes]:
    """Every file of a board's littlefs2 image, read from CPython (littlefs-python)."""
    data = bytearray(image.read_bytes())
    fs = LittleFS(block_size=4096, block_count=len(data) // 4096, mount=False)
    fs.context.buffer = data
    fs.mount()
    files = {}
    for root, _dirs, names in fs.walk("/"):
        for name in names:
            path = root.rstrip("/") + "/" + name
            with fs.open(path, "rb") as f:
                files[path] = f.read()
    return files


def wait_for(condition, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %.0f s" % (what, timeout))
        time.sleep(0.02)


def test_hard_reset_from_the_cli_restarts_the_vm(emulated_board, boardemu_cli):
    before = emulated_board.status()
    result = boardemu_cli("reset --dir %s" % emulated_board.dir)
    assert result.code == 0, result.stderr
    after = emulated_board.status()
    assert after["vm_pid"] != before["vm_pid"]
    assert after["last_reset_cause"] == "hard"
    assert after["reset_count"] == before["reset_count"] + 1
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        out, _ = repl.exec_raw("import machine; print(machine.reset_cause() == machine.HARD_RESET)")
    assert out == b"True\r\n"


def test_power_cut_during_a_write_loses_nothing_committed(emulated_board, boardemu_cli):
    writer = (
        "with open('keep.txt', 'w') as f:\n"
        "    f.write('committed')\n"
        "print('go')\n"
        "for i in range(400):\n"
        "    with open('big.bin', 'wb') as f:\n"
        "        f.write(bytes([i % 256]) * 6000)\n"
        "    print('w', i)\n"
        "print('done')\n"
    )
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        repl.write(writer.encode() + b"\x04")
        repl.read_until(b"w 3\r\n", timeout=30)  # rewriting big.bin, again and again
        result = boardemu_cli("power --dir %s cut" % emulated_board.dir)
        assert result.code == 0, result.stderr
        assert b"done" not in repl.drain(0.2)
        status = emulated_board.status()
        assert (status["state"], status["running"]) == ("off", False)
        cut_flash = read_flash(emulated_board.flash_image)  # what the flash held when the power went
        assert cut_flash["/keep.txt"] == b"committed"
        content = cut_flash["/big.bin"]
        assert len(content) == 6000 and len(set(content)) == 1  # one whole version, never a mix
        assert boardemu_cli("power --dir %s on" % emulated_board.dir).code == 0
        status = emulated_board.status()
        assert status["last_reset_cause"] == "power_on"
        repl.drain()
        repl.enter_raw()
        out, _ = repl.exec_raw("print(open('keep.txt').read(), len(open('big.bin','rb').read()))")
    assert out == b"committed 6000\r\n"  # mounted, not reformatted


def test_serial_unplug_and_plug(emulated_board, boardemu_cli):
    link = Path(emulated_board.port)
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        assert boardemu_cli("serial --dir %s unplug" % emulated_board.dir).code == 0
        assert not os.path.lexists(link)
        with pytest.raises(serial.SerialException):
            for _ in range(50):  # the open port reports the disconnect on its next read
                repl.serial.read(1)
    with pytest.raises(serial.SerialException):
        serial.Serial(str(link))
    assert emulated_board.status()["serial"]["plugged"] is False
    result = boardemu_cli("serial --dir %s plug" % emulated_board.dir)
    assert result.code == 0 and result.stdout.strip() == str(link)
    assert emulated_board.status()["running"]  # the board ran on; only the cable was out
    with SerialRepl(str(link)) as repl:
        repl.enter_raw()
        out, _ = repl.exec_raw("print('back')")
    assert out == b"back\r\n"


def test_rfc2217_reaches_the_board_and_dtr_rts_reset_it(board_factory):
    board = board_factory("water-level", rfc2217_port=0)
    url = board.rfc2217_url
    assert url.startswith("rfc2217://127.0.0.1:")
    with SerialRepl(url) as repl:
        repl.enter_raw()  # opening asserts DTR and RTS together: no reset
        out, _ = repl.exec_raw("print('over rfc2217')")
        assert out == b"over rfc2217\r\n"
        assert board.status()["reset_count"] == 0
        repl.serial.dtr = False
        repl.serial.rts = True  # EN low: held in reset
        wait_for(lambda: board.status()["state"] == "reset", what="held in reset")
        repl.serial.rts = False  # EN released: boots
        banner = repl.read_until(b">>> ")
    assert b'Type "help()" for more information.' in banner
    status = board.status()
    assert (status["last_reset_cause"], status["reset_count"]) == ("hard", 1)


def test_same_dir_is_the_same_board_after_a_restart(board_factory, tmp_path):
    board = board_factory("wind-load", name="b1")
    uid = board.uid
    with SerialRepl(board.port) as repl:
        repl.enter_raw()
        repl.exec_raw("f = open('note.txt', 'w'); f.write('persisted'); f.close()")
    board.stop()
    assert not board.running() and not os.path.lexists(board.port)
    assert read_flash(board.flash_image)["/note.txt"] == b"persisted"
    again = EmulatedBoard.start(None, tmp_path / "b1", owner_pid=os.getpid())
    assert (again.uid, again.kind) == (uid, "wind-load")
    with SerialRepl(again.port) as repl:
        repl.enter_raw()
        out, _ = repl.exec_raw(
            "import machine, binascii; print(open('note.txt').read(), binascii.hexlify(machine.unique_id()).decode())")
    assert out == ("persisted %s\r\n" % uid).encode()


def test_cli_start_status_stop_and_user_errors(boardemu_cli, tmp_path):
    folder = tmp_path / "cli-board"
    missing = boardemu_cli("start --dir %s" % folder)
    assert missing.code == 1 and missing.stderr.startswith("boardemu: ") and "--kind" in missing.stderr
    started = boardemu_cli("start --kind water-level --dir %s" % folder)
    try:
        assert started.code == 0, started.stderr
        assert started.stdout.strip() == str(folder / "tty")
        assert os.path.realpath(folder / "tty").startswith("/dev/pts/")
        wrong = boardemu_cli("start --kind wind-load --dir %s" % folder)
        assert wrong.code == 1 and "water-level" in wrong.stderr and "Traceback" not in wrong.stderr
        status = boardemu_cli("status --dir %s" % folder)
        assert status.code == 0 and "water-level" in status.stdout and "running" in status.stdout
        bad = boardemu_cli("set --dir %s level_cm" % folder)
        assert bad.code == 1 and "NAME=VALUE" in bad.stderr
    finally:
        assert boardemu_cli("stop --dir %s" % folder).code == 0
    gone = boardemu_cli("status --dir %s" % folder)
    assert gone.code == 1 and "no board is running" in gone.stderr
