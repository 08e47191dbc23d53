"""Unit tests of the emulator core's pure parts: the UART output filter and the board's settings."""

from __future__ import annotations

import json

import pytest

from tools.boardemu import BoardEmuError, boardconf
from tools.boardemu.stream import BoardOutput


def feed_bytewise(out: BoardOutput, data: bytes) -> bytes:
    return b"".join(out.feed(data[i:i + 1]) for i in range(len(data)))


def test_markers_are_cut_out_and_reported_even_split_byte_by_byte():
    seen = []
    out = BoardOutput(seen.append)
    text = b"a\x1b]boardemu;up\x07b\x1b[31mred\x1b]boardemu;repl\x07c"
    assert feed_bytewise(out, text) == b"ab\x1b[31mredc"
    assert seen == ["up", "repl"]


def test_lone_newlines_are_cooked_once():
    out = BoardOutput()
    assert out.feed(b"x\ny\r\nz\r") + out.feed(b"\nw\n") == b"x\r\ny\r\nz\r\nw\r\n"


def test_repl_mode_follows_the_banners():
    out = BoardOutput()
    feed_bytewise(out, b"\r\nraw REPL; CTRL-B to exit\r\n>")
    assert out.raw_repl
    out.feed(b'MicroPython x\r\nType "help()" for more information.\r\n>>> ')
    assert not out.raw_repl


def test_swallowing_drops_the_friendly_banner_up_to_the_raw_one():
    out = BoardOutput()
    assert out.feed(b"boot output\n") == b"boot output\r\n"
    out.swallow_until_raw_banner()
    shown = feed_bytewise(out, b'MicroPython\r\nType "help()" for more information.\r\n>>> '
                               b'\r\nraw REPL; CTRL-B to exit\r\n>')
    assert shown == b"raw REPL; CTRL-B to exit\r\n>"
    assert out.raw_repl
    assert out.feed(b"OK") == b"OK"


@pytest.mark.parametrize("text,size", [("110k", 112640), ("2M", 2097152), ("4096", 4096), ("64 KB", None)])
def test_parse_size(text, size):
    if size is None:
        with pytest.raises(BoardEmuError, match="not a size"):
            boardconf.parse_size(text, "heap size")
    else:
        assert boardconf.parse_size(text, "heap size") == size


def test_a_board_keeps_its_identity_and_refuses_other_hardware(tmp_path):
    first = boardconf.resolve(tmp_path, kind="water-level")
    assert (first.kind, first.baud, first.heap, first.flash_bytes) == ("water-level", 115200, "110k", 2 << 20)
    again = boardconf.resolve(tmp_path, baud=9600)
    assert (again.uid, again.baud) == (first.uid, 9600)
    with pytest.raises(BoardEmuError, match="holds a water-level board"):
        boardconf.resolve(tmp_path, kind="wind-load")
    with pytest.raises(BoardEmuError, match="cannot change"):
        boardconf.resolve(tmp_path, flash_size="1M")
    assert json.loads((tmp_path / "board.json").read_text())["uid"] == first.uid


def test_new_board_needs_a_kind_and_sane_settings(tmp_path):
    with pytest.raises(BoardEmuError, match="--kind"):
        boardconf.resolve(tmp_path)
    with pytest.raises(BoardEmuError, match="unknown board kind"):
        boardconf.resolve(tmp_path, kind="toaster")
    with pytest.raises(BoardEmuError, match="too small"):
        boardconf.resolve(tmp_path, kind="water-level", heap="8k")
    (tmp_path / "board.json").write_text("{not json")
    with pytest.raises(BoardEmuError, match="not JSON"):
        boardconf.load(tmp_path)


def test_the_console_log_keeps_what_the_board_printed_in_two_bounded_files(tmp_path):
    from tools.boardemu.host import ConsoleLog

    log = ConsoleLog(tmp_path / "console.log", 100)
    log.write(b"boot\r\n" * 10)  # 60 bytes
    log.write(b"x" * 50)  # past 100: the 60 bytes become console.log.1
    assert (tmp_path / "console.log.1").read_bytes() == b"boot\r\n" * 10
    assert (tmp_path / "console.log").read_bytes() == b"x" * 50
    log.write(b"y" * 60)  # past again: the older file is replaced, never a third one
    assert (tmp_path / "console.log.1").read_bytes() == b"x" * 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["console.log", "console.log.1"]
    again = ConsoleLog(tmp_path / "console.log", 100)  # a restarted host counts what is there
    again.write(b"z" * 50)
    assert (tmp_path / "console.log").read_bytes() == b"z" * 50
