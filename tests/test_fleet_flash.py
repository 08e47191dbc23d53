"""`fleet flash` logic against an in-memory board: the A/B layout, what is kept, copied or sent, the
checks made before any write, and interruptions. The serial side is tested on emulated boards in
hil_tests/test_fleet_flash.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from fleet.board_session import folder_digest
from fleet.errors import FleetError
from fleet.flash import ACTIVE, Bundle, Observer, Plan, board_layout, flash, write_base_firmware

BLOCK = 4096


def make_bundle(folder: Path, files: dict[str, bytes], board: str = "emulator", mpy: str = "6.3",
                version: str = "1.0") -> Bundle:
    """A bundle folder as `fleet build` writes it, with these files."""
    entries = []
    for rel, data in sorted(files.items()):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": 1, "version": version, "board": board, "mpy": mpy, "files": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return Bundle(folder)


SOURCES = {
    "agent/__init__.mpy": b"M\x06agent init",
    "agent/app.mpy": b"M\x06app" * 900,
    "agent/outbox.mpy": b"M\x06outbox" * 500,
    "protocols/__init__.mpy": b"M\x06protocols",
    "protocols/topics.mpy": b"M\x06topics" * 300,
    "boot.py": b"import gc\ngc.collect()\n",
    "main.py": b"print('main')\n",
    "board.py": b"class Board:\n    pass\n",
}


class FakeBoard:
    """A board session in memory: the BoardSession methods flash() uses, over a dict of files.

    `cut_after` bytes sent, the line goes dead as in a power cut: the file in flight is not committed
    (its temp file stays half written), and every later call fails.
    """

    def __init__(self, files: dict[str, bytes] | None = None, platform: str = "linux", mpy: str = "6.3",
                 flash_bytes: int = 2 * 1024 * 1024):
        self.files = dict(files or {"/boot.py": b"# stock boot.py\n"})
        self.platform, self.mpy, self.flash_bytes = platform, mpy, flash_bytes
        self.port, self.baud = "fake://board", 115200
        self.broken = False
        self.cut_after: int | None = None
        self.sent_bytes = 0
        self.writes = 0
        self.resets = 0

    def _alive(self) -> None:
        if self.broken:
            raise FleetError("the board stopped answering")

    def used_blocks(self) -> int:
        return sum(max(1, -(-len(data) // BLOCK)) for data in self.files.values())

    def identify(self) -> dict:
        self._alive()
        slot = self.files.get(ACTIVE, b"").decode() or None
        manifest = self.files.get("/app/%s/manifest.json" % slot)
        return {"uid": "240ac4000001", "micropython": "1.29.0", "mpy": self.mpy, "platform": self.platform,
                "flash_block": BLOCK, "flash_total": self.flash_bytes,
                "flash_free": self.flash_bytes - BLOCK * self.used_blocks(), "slot": slot,
                "app_version": json.loads(manifest)["version"] if manifest else None}

    def file_hashes(self, paths, digits: int = 64) -> dict[str, str]:
        self._alive()
        if isinstance(paths, str):
            chosen = [p for p in self.files if p.startswith(paths.rstrip("/") + "/")]
        else:
            chosen = [p for p in paths if p in self.files]
        return {p: hashlib.sha256(self.files[p]).hexdigest()[:digits] for p in chosen}

    def folder_digest(self, folder: str) -> tuple[str, int]:
        found = self.file_hashes(folder)
        return folder_digest(found), len(found)

    def makedirs(self, path: str) -> None:
        self._alive()

    def remove(self, path: str) -> None:
        self._alive()
        self.writes += 1
        self.files.pop(path, None)

    def rename(self, src: str, dst: str) -> None:
        self._alive()
        self.writes += 1
        self.files[dst] = self.files.pop(src)

    def write_text(self, path: str, text: str) -> None:
        self._alive()
        self.writes += 1
        self.files[path] = text.encode()

    def copy_files_atomic(self, pairs) -> None:
        for src, dst in pairs:
            self._alive()
            self.writes += 1
            self.files[dst] = self.files[src]

    def write_files_atomic(self, items, progress=None, on_file=None) -> None:
        for path, data in items:
            self._alive()
            self.writes += 1
            for start in range(0, len(data), 64):
                chunk = data[start:start + 64]
                if self.cut_after is not None and self.sent_bytes + len(chunk) > self.cut_after:
                    self.files[path + ".tmp"] = data[:start]
                    self.broken = True
                    raise FleetError("the board stopped answering while receiving %s" % path)
                self.sent_bytes += len(chunk)
                if progress:
                    progress(len(chunk))
            self.files[path] = data
            if on_file:
                on_file(path)

    def soft_reset(self) -> None:
        self._alive()
        self.resets += 1


def installed(board: FakeBoard, bundle: Bundle, slot: str) -> bool:
    """True when the board holds exactly this bundle in `slot`, active, and its root files."""
    layout = board_layout(bundle, slot)
    in_slot = {p for p in board.files if p.startswith("/app/%s/" % slot)}
    return all(board.files.get(p) == data for p, data in layout.items()) and in_slot == {
        p for p in layout if p.startswith("/app/%s/" % slot)}


@pytest.fixture
def bundle(tmp_path) -> Bundle:
    return make_bundle(tmp_path / "v1", SOURCES)


def test_blank_board_gets_everything_in_slot_a_and_is_restarted(bundle):
    board = FakeBoard(files={"/boot.py": b"# stock\n", "/device.json": b'{"id": "wl-1"}'})
    summary = flash(board, bundle)
    assert installed(board, bundle, "a")
    assert board.files[ACTIVE] == b"a" and "/app/active.new" not in board.files
    assert board.files["/device.json"] == b'{"id": "wl-1"}'  # the identity is never touched
    assert sorted(summary["sent"]) == sorted(list(SOURCES) + ["manifest.json"])
    assert summary["copied"] == [] and summary["kept"] == 0 and summary["switched"]
    assert summary["slot"] == "a" and summary["previous_slot"] is None
    assert summary["bytes_sent"] == sum(len(d) for d in bundle.data.values())
    assert board.resets == 1


def test_same_bundle_again_writes_nothing(bundle):
    board = FakeBoard()
    flash(board, bundle)
    writes = board.writes
    summary = flash(board, bundle)
    assert summary["up_to_date"] and summary["sent"] == [] and summary["slot"] == "a"
    assert board.writes == writes and board.resets == 2


def test_one_changed_file_is_sent_and_the_rest_copied_on_the_board(bundle, tmp_path):
    board = FakeBoard()
    flash(board, bundle)
    v2 = make_bundle(tmp_path / "v2", {**SOURCES, "agent/outbox.mpy": b"M\x06outbox v2" * 500}, version="2.0")
    summary = flash(board, v2)
    assert summary["sent"] == ["agent/outbox.mpy", "manifest.json"]  # the manifest lists the new hash
    assert sorted(summary["copied"]) == sorted(r for r in SOURCES if r not in ("agent/outbox.mpy", "boot.py",
                                                                                  "main.py", "board.py"))
    assert summary["bytes_sent"] == len(v2.data["agent/outbox.mpy"]) + len(v2.data["manifest.json"])
    assert installed(board, v2, "b") and board.files[ACTIVE] == b"b"
    assert installed(board, bundle, "a") is False or board.files[ACTIVE] == b"b"  # a is only a fallback now


def test_a_root_file_change_is_sent_without_a_slot_switch(bundle, tmp_path):
    board = FakeBoard()
    flash(board, bundle)
    board.files["/board.py"] = b"# edited on the board\n"
    summary = flash(board, bundle)
    assert summary["sent"] == ["board.py"] and not summary["switched"] and summary["slot"] == "a"
    assert board.files["/board.py"] == SOURCES["board.py"]


def test_interrupted_flash_keeps_the_old_app_and_a_rerun_finishes(bundle, tmp_path):
    board = FakeBoard()
    flash(board, bundle)
    changed = {rel: data + b" v2" if rel.endswith(".mpy") else data for rel, data in SOURCES.items()}
    v2 = make_bundle(tmp_path / "v2", changed, version="2.0")
    board.cut_after = board.sent_bytes + 5000
    with pytest.raises(FleetError, match="stopped answering"):
        flash(board, v2)
    assert board.files[ACTIVE] == b"a" and installed(board, bundle, "a")  # power back: the old agent boots
    assert any(p.endswith(".tmp") for p in board.files)  # a torn temp file in slot b
    board.broken, board.cut_after = False, None
    summary = flash(board, v2)
    assert summary["kept"] > 0 and summary["slot"] == "b"  # what arrived before the cut stays
    assert installed(board, v2, "b") and board.files[ACTIVE] == b"b"
    assert not any(p.endswith(".tmp") for p in board.files)


def test_the_target_slot_loses_files_the_bundle_lacks(bundle, tmp_path):
    board = FakeBoard(files={"/app/a/agent/old.mpy": b"old", "/app/a/agent/app.mpy.tmp": b"torn"})
    summary = flash(board, bundle)
    assert set(summary["removed"]) == {"/app/a/agent/old.mpy", "/app/a/agent/app.mpy.tmp"}
    assert installed(board, bundle, "a")


@pytest.mark.parametrize("board_kwargs, bundle_kwargs, message", [
    ({"mpy": "6.2"}, {}, "holds .mpy v6.3 but the board's MicroPython 1.29.0 loads .mpy v6.2"),
    ({"platform": "esp32"}, {}, "bundle is for emulator but the board is esp32"),
    ({"platform": "rp2"}, {}, "no bundle"),
])
def test_an_incompatible_board_is_refused_before_any_write(tmp_path, board_kwargs, bundle_kwargs, message):
    bundle = make_bundle(tmp_path / "b", SOURCES, **bundle_kwargs)
    board = FakeBoard(**board_kwargs)
    before = dict(board.files)
    with pytest.raises(FleetError, match=message.replace(".", r"\.")):
        flash(board, bundle)
    assert board.files == before and board.writes == 0
    assert board.resets == 1  # restarted: its agent runs again


def test_a_full_flash_is_refused_before_any_write(bundle):
    board = FakeBoard(flash_bytes=16 * BLOCK)
    before = dict(board.files)
    with pytest.raises(FleetError, match="not enough free flash on the board: this bundle needs"):
        flash(board, bundle)
    assert board.files == before and board.writes == 0


def test_free_space_counts_what_the_target_slot_gives_back(bundle):
    stale = {p: "0" * 64 for p in board_layout(bundle, "a") if p.startswith("/app/a/")}  # old versions
    plan = Plan(bundle, None, stale)
    need, freed = plan.blocks(BLOCK)
    assert plan.target == "a" and freed == len(stale) == len(plan.send)
    plan.check_fits(flash_free=(need - freed) * BLOCK, block=BLOCK)  # fits by replacing the stale files
    with pytest.raises(FleetError, match="needs %d KB" % (need * 4)):
        Plan(bundle, None, {}).check_fits(flash_free=(need - freed) * BLOCK, block=BLOCK)


def test_a_damaged_bundle_is_refused(tmp_path, bundle):
    (bundle.dir / "agent" / "app.mpy").write_bytes(b"tampered")
    with pytest.raises(FleetError, match="app.mpy does not match its manifest"):
        Bundle(bundle.dir)
    with pytest.raises(FleetError, match="has no manifest.json"):
        Bundle(tmp_path)


def test_the_observer_sees_every_byte_and_file(bundle):
    class Seen(Observer):
        def __init__(self):
            self.total, self.bytes, self.files, self.stages = None, 0, [], []

        def stage(self, text):
            self.stages.append(text)

        def sending(self, total_bytes):
            self.total = total_bytes

        def sent(self, nbytes):
            self.bytes += nbytes

        def file_done(self, rel, action):
            self.files.append((rel, action))

    seen = Seen()
    summary = flash(FakeBoard(), bundle, seen)
    assert seen.total == seen.bytes == summary["bytes_sent"]
    assert sorted(rel for rel, _ in seen.files) == sorted(summary["sent"])
    assert seen.stages[-2:] == ["switching to slot a", "restarting the board"]


def test_base_firmware_refuses_a_non_image_and_a_pseudo_terminal(tmp_path):
    not_image = tmp_path / "notes.bin"
    not_image.write_bytes(b"hello")
    with pytest.raises(FleetError, match="not an ESP32 firmware image"):
        write_base_firmware("/dev/ttyUSB0", not_image)
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\xe9" + bytes(255))
    master, slave = os.openpty()
    try:
        with pytest.raises(FleetError, match="pseudo-terminal"):
            write_base_firmware(os.ttyname(slave), image)
    finally:
        os.close(master)
        os.close(slave)


def test_cli_help_and_a_wrong_port(tmp_path, capsys):
    from fleet.cli.main import main

    for command in ("flash", "console"):
        assert main([command, "--help"]) == 0
        assert "Example" in capsys.readouterr().out
    for command in ("flash", "console"):
        assert main([command, "--port", str(tmp_path / "ttyUSB9")]) == 3
        err = capsys.readouterr().err
        assert err.strip() == "fleet: cannot open %s: no such port; check the port name and the cable" % (
            tmp_path / "ttyUSB9")


def test_a_file_that_differs_after_writing_stops_the_switch(bundle, tmp_path):
    board = FakeBoard()
    flash(board, bundle)
    v2 = make_bundle(tmp_path / "v2", {**SOURCES, "agent/app.mpy": b"M\x06app v2" * 900}, version="2.0")

    class BadCopy(FakeBoard):
        flipped = False

        def copy_files_atomic(self, pairs):
            super().copy_files_atomic(pairs)
            if not self.flipped:
                self.files["/app/b/agent/outbox.mpy"] = b"flash bit flipped"  # once
                self.flipped = True

    bad = BadCopy(files=board.files)
    with pytest.raises(FleetError, match="^verification failed: /app/b/agent/outbox.mpy on the board differs"):
        flash(bad, v2)
    assert bad.files[ACTIVE] == b"a" and bad.resets == 1  # still the old app, restarted
    summary = flash(bad, v2)  # the next run replaces the bad copy
    assert summary["copied"] == ["agent/outbox.mpy"] and bad.files[ACTIVE] == b"b"
    assert installed(bad, v2, "b")


def test_a_manifest_path_outside_the_slot_is_refused(tmp_path):
    with pytest.raises(FleetError, match="'../device.json', which is not a plain relative path"):
        make_bundle(tmp_path / "evil", {**SOURCES, "../device.json": b"{}"})


def test_going_back_to_the_previous_bundle_sends_and_copies_nothing(bundle, tmp_path):
    board = FakeBoard()
    flash(board, bundle)
    v2 = make_bundle(tmp_path / "v2", {**SOURCES, "agent/app.mpy": b"M\x06app v2" * 900}, version="2.0")
    flash(board, v2)
    summary = flash(board, bundle)  # slot a still holds it whole: only the switch is left to do
    assert (summary["sent"], summary["copied"], summary["slot"], summary["switched"]) == ([], [], "a", True)
    assert summary["kept"] == len(SOURCES) - 3 + 1 and board.files[ACTIVE] == b"a"
