"""The emulated board's serial line behaves like MicroPython firmware, seen through pyserial."""

from __future__ import annotations

import struct
import time

import pytest

from hil_tests.conftest import SerialRepl

pytestmark = pytest.mark.hil

BOOT_FILES = (
    "open('boot.py','w').write('print(\"boot ran\")\\n')\n"
    "open('main.py','w').write('print(\"main ran\")\\nfrom_main = 1\\n')\n"
)


def test_hard_reset_prints_banner_and_friendly_repl_evaluates(emulated_board, boardemu_cli):
    with SerialRepl(emulated_board.port) as repl:
        repl.drain()  # the power-on banner, if it is still on its way
        assert boardemu_cli("reset", "--dir", emulated_board.dir).code == 0
        banner = repl.read_until(b">>> ")
        assert b"MicroPython" in banner
        assert b'Type "help()" for more information.\r\n>>> ' in banner
        repl.write(b"6*7\r")
        assert repl.read_until(b">>> ").endswith(b"6*7\r\n42\r\n>>> ")


def test_raw_repl_runs_code_and_reports_errors_apart(emulated_board):
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        out, err = repl.exec_raw("print('a')\nprint('b')")
        assert (out, err) == (b"a\r\nb\r\n", b"")
        out, err = repl.exec_raw("1/0")
        assert out == b""
        assert b"ZeroDivisionError" in err
        repl.write(b"\x02")
        assert repl.read_until(b">>> ").endswith(b'Type "help()" for more information.\r\n>>> ')


def test_raw_paste_with_flow_control(emulated_board):
    # A program larger than the raw-paste window, sent only as the board grants room (pyboard.py's way).
    code = b"x = 0\n" + b"x += 1\n" * 200 + b"print('sum', x)\n"
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        repl.write(b"\x05A\x01")
        assert repl.read_until(b"R\x01") == b"R\x01"
        window = struct.unpack("<H", repl.read_exactly(2))[0]
        assert 0 < window < len(code)
        remain, sent = window, 0
        while sent < len(code):
            while remain == 0 or repl.pending():
                assert repl.read_exactly(1) == b"\x01"  # the board grants another window
                remain += window
            chunk = code[sent:sent + remain]
            repl.write(chunk)
            sent += len(chunk)
            remain -= len(chunk)
        repl.write(b"\x04")
        repl.read_until(b"\x04")
        out = repl.read_until(b"\x04")[:-1]
        err = repl.read_until(b"\x04")[:-1]
        assert (out, err) == (b"sum 200\r\n", b"")


def test_ctrl_c_interrupts_code_run_from_the_raw_repl(emulated_board):
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        repl.write(b"n = 0\nwhile True:\n    n += 1\n\x04")
        repl.read_until(b"OK")
        assert repl.drain(0.3) == b""  # still running
        repl.write(b"\x03")
        assert repl.read_until(b"\x04") == b"\x04"
        err = repl.read_until(b"\x04>")
        assert b"KeyboardInterrupt" in err
        out, _ = repl.exec_raw("print(n > 1000)")  # same VM: the loop really ran, then stopped
        assert out == b"True\r\n"


def test_soft_reboot_runs_boot_then_main_then_repl(emulated_board):
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        repl.exec_raw(BOOT_FILES)
        repl.write(b"\x02")
        repl.read_until(b">>> ")
        repl.write(b"\x04")  # Ctrl-D at the friendly prompt
        text = repl.read_until(b">>> ")
        repl.write(b"sorted(globals())\r")  # main.py's names stay, as on a board; the bootstrap's do not
        assert repl.read_until(b">>> ").endswith(b"\r\n['__name__', 'from_main']\r\n>>> ")
    soft, boot, main = text.find(b"MPY: soft reboot\r\n"), text.find(b"boot ran\r\n"), text.find(b"main ran\r\n")
    assert 0 <= soft < boot < main < text.find(b'Type "help()" for more information.')
    status = emulated_board.status()
    assert status["last_reset_cause"] == "soft"
    assert status["reset_causes"]["soft"] == 1


def test_soft_reboot_in_raw_repl_comes_back_raw_without_main(emulated_board):
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        repl.exec_raw(BOOT_FILES)
        repl.write(b"\x04")  # Ctrl-D on an empty raw-REPL line: mpremote's soft reset
        text = repl.read_until(b"raw REPL; CTRL-B to exit\r\n>")
        assert text.startswith(b"OK\r\nMPY: soft reboot\r\n")
        assert b"boot ran\r\n" in text
        assert b"main ran" not in text
        assert b"help()" not in text  # the friendly banner never shows
        out, _ = repl.exec_raw("import machine; print(machine.reset_cause() == machine.SOFT_RESET)")
        assert out == b"True\r\n"


def test_output_is_paced_to_the_baud_rate(emulated_board):
    count = 11520  # one second of line time at 115200 baud, 8N1
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        repl.write(b"print('x' * %d)\x04" % count)
        repl.read_until(b"OK")
        started = time.monotonic()
        out = repl.read_until(b"\x04")
        elapsed = time.monotonic() - started
    assert out.count(b"x") == count
    assert elapsed >= 0.9 * count * 10 / 115200


def test_input_is_paced_to_the_baud_rate(emulated_board):
    # The board itself times the arrival of bytes written all at once by the host.
    count = 5760  # half a second of line time at 115200 baud
    reader = (
        "import sys, time\n"
        "first = None\n"
        "for i in range(%d):\n"
        "    sys.stdin.buffer.read(1)\n"
        "    if first is None:\n"
        "        first = time.ticks_ms()\n"
        "print(time.ticks_diff(time.ticks_ms(), first))\n" % count
    )
    with SerialRepl(emulated_board.port) as repl:
        repl.enter_raw()
        repl.write(reader.encode() + b"\x04")
        repl.read_until(b"OK")
        repl.write(b"y" * count)
        out = repl.read_until(b"\x04")[:-1]
        assert repl.read_until(b"\x04>") == b"\x04>"
    assert int(out) >= 0.9 * (count - 1) * 10 / 115200 * 1000
