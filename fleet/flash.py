"""Put an agent bundle on a board, A/B style, so that an interruption never leaves half of each.

On-board layout (the OTA update of issue 7 builds on it):

    /boot.py /main.py /board.py     root files, replaced (temp + rename) only when they change
    /device.json                    the identity written by provisioning; never touched here
    /app/a/...  /app/b/...          two app slots: agent/, protocols/ and the bundle's manifest.json
    /app/active                     "a" or "b": the slot main.py runs; switched last, atomically

`flash()` fills the inactive slot: a file the slot already holds (same SHA-256) is kept, one the
active slot holds is copied on the board, any other is sent over serial to `<name>.tmp`, checked and
renamed. Files the bundle lacks are removed from the slot, every file's hash is verified on the
board, the root files are brought up to date, and only then is `/app/active` switched (written to
`/app/active.new`, renamed over it). Until that rename the board boots its old agent; rerunning
finishes the job, keeping what already arrived. Compatibility and free flash are checked before the
first write. The root files are outside the slots, so a change to them counts from the moment it is
renamed in: they are written last before the switch (main.py only reads /app/active; board.py is the
hardware; neither is updated over the air).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from fleet.errors import FleetError

SLOTS = ("a", "b")
APP = "/app"
ACTIVE = APP + "/active"
ROOT_FILES = ("boot.py", "main.py", "board.py")
MANIFEST = "manifest.json"
#: What firmware reports as sys.platform -> the bundle's board.
PLATFORM_BOARDS = {"esp32": "esp32", "linux": "emulator"}
#: Hex digits of the hashes read back to plan a flash: 64 bits tell files apart; they cross the line
#: for every file of both slots, where whole hashes would cost a second at 115200 baud.
HELD_DIGITS = 16
#: Blocks kept free beyond the files: littlefs needs room to move metadata pairs.
SPARE_BLOCKS = 4


class Bundle:
    """A built bundle folder: its manifest and the bytes of each file, checked against the manifest."""

    def __init__(self, folder: Path):
        from firmware.build import BuildError, read_manifest
        from fleet.board_session import sha256_hex

        self.dir = Path(folder)
        try:
            self.manifest = read_manifest(self.dir)
        except BuildError as error:
            raise FleetError(str(error)) from None
        self.data: dict[str, bytes] = {}
        for entry in self.manifest["files"]:
            path = self.dir / entry["path"]
            rel = str(entry["path"])
            if rel.startswith("/") or "\\" in rel or any(part in ("", ".", "..") for part in rel.split("/")):
                raise FleetError("%s: the manifest names %r, which is not a plain relative path" % (self.dir, rel))
            try:
                data = path.read_bytes()
            except OSError:
                raise FleetError("%s: %s is missing; rebuild the bundle with `fleet build`"
                                 % (self.dir, entry["path"])) from None
            if sha256_hex(data) != entry["sha256"]:
                raise FleetError("%s: %s does not match its manifest; rebuild the bundle" % (self.dir, entry["path"]))
            self.data[entry["path"]] = data
        self.data[MANIFEST] = (self.dir / MANIFEST).read_bytes()

    @property
    def board(self) -> str:
        return str(self.manifest["board"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    def hashes(self) -> dict[str, str]:
        """{bundle path: sha256} of every file, the manifest included."""
        from fleet.board_session import sha256_hex

        return {rel: sha256_hex(data) for rel, data in self.data.items()}


def board_path(rel: str, slot: str) -> str:
    """Where a bundle file lives on the board: root files at /, the rest in the slot."""
    return "/" + rel if rel in ROOT_FILES else "%s/%s/%s" % (APP, slot, rel)


def board_layout(bundle: Bundle, slot: str = "a") -> dict[str, bytes]:
    """Every file of a finished install in `slot`, by board path, /app/active included."""
    files = {board_path(rel, slot): data for rel, data in bundle.data.items()}
    files[ACTIVE] = slot.encode()
    return files


class Plan:
    """What a flash will do, worked out from the bundle and the files the board holds."""

    def __init__(self, bundle: Bundle, active: str | None, held: dict[str, str]):
        hashes = bundle.hashes()
        slot_files = {rel: sha for rel, sha in hashes.items() if rel not in ROOT_FILES}
        self.active = active if active in SLOTS else None
        if self.active and _slot_holds(held, self.active, slot_files):
            self.target = self.active  # already there: only root files may need work
        else:
            self.target = "b" if self.active == "a" else "a"
        self.keep: list[str] = []
        self.copy: list[str] = []
        self.send: list[str] = []
        for rel, sha in sorted(slot_files.items()):
            if _same(held.get(board_path(rel, self.target)), sha):
                self.keep.append(rel)
            elif self.active and _same(held.get(board_path(rel, self.active)), sha):
                self.copy.append(rel)
            else:
                self.send.append(rel)
        prefix = "%s/%s/" % (APP, self.target)
        wanted = {board_path(rel, self.target) for rel in slot_files}
        self.remove = sorted(p for p in held if p.startswith(prefix) and p not in wanted)
        self.root = [rel for rel in ROOT_FILES if rel in hashes and not _same(held.get("/" + rel), hashes[rel])]
        self.root_leftovers = sorted(p for p in held if p in {"/%s.tmp" % rel for rel in ROOT_FILES})
        self.expected = {board_path(rel, self.target): sha for rel, sha in slot_files.items()}
        self.switch = self.target != self.active
        self.sizes = {rel: len(data) for rel, data in bundle.data.items()}
        self.held = held

    @property
    def up_to_date(self) -> bool:
        return not (self.copy or self.send or self.remove or self.root or self.root_leftovers or self.switch)

    def bytes_to_send(self) -> int:
        return sum(self.sizes[rel] for rel in self.send + self.root)

    def folders(self) -> list[str]:
        """Folders the target slot needs, parents first."""
        found = {"%s/%s" % (APP, self.target)}
        for rel in self.copy + self.send:
            path = board_path(rel, self.target)
            found.add(path.rsplit("/", 1)[0])
        return sorted(found)

    def blocks(self, block: int) -> tuple[int, int]:
        """(blocks the plan needs free, blocks it gives back) on a filesystem of `block`-byte blocks."""

        def count(size: int) -> int:
            return max(1, -(-size // block))  # a file takes whole blocks (tiny ones may be inlined: spare)

        written = self.copy + self.send + self.root
        need = sum(count(self.sizes[rel]) for rel in written) + 2 * len(self.folders()) + SPARE_BLOCKS
        if written:
            need += max(count(self.sizes[rel]) for rel in written)  # a temp file beside the one it replaces
        # What the slot holds and is removed or replaced gives back at least a block a file.
        freed = len(self.remove) + sum(1 for rel in written if board_path(rel, self.target) in self.held)
        return need, freed

    def check_fits(self, flash_free: int, block: int) -> None:
        """FleetError, before anything is written, when the board's free flash cannot take the plan."""
        block = max(block, 1)
        need, freed = self.blocks(block)
        have = flash_free // block + freed
        if need > have:
            raise FleetError("not enough free flash on the board: this bundle needs %d KB, the board has %d KB free; "
                             "free some space (or erase it with --base-firmware ... --erase) and run the command again"
                             % (need * block // 1024, have * block // 1024))


def _same(held: str | None, sha: str) -> bool:
    """A hash read from the board (maybe only its first digits, see held_files) matches `sha`."""
    return held is not None and len(held) >= HELD_DIGITS and sha.startswith(held)


def _slot_holds(held: dict[str, str], slot: str, slot_files: dict[str, str]) -> bool:
    """True when `slot` holds exactly these files with these hashes."""
    prefix = "%s/%s/" % (APP, slot)
    in_slot = {p: sha for p, sha in held.items() if p.startswith(prefix)}
    wanted = {board_path(rel, slot): sha for rel, sha in slot_files.items()}
    return in_slot.keys() == wanted.keys() and all(_same(in_slot[p], sha) for p, sha in wanted.items())


def check_compatible(bundle: Bundle, ident: dict) -> None:
    """FleetError when the bundle cannot run on the identified board (.mpy version, board type)."""
    board = PLATFORM_BOARDS.get(ident["platform"])
    if board is None:
        raise FleetError("the board runs MicroPython on %r, for which there is no bundle (boards: %s)"
                         % (ident["platform"], ", ".join(sorted(set(PLATFORM_BOARDS.values())))))
    if bundle.board != board:
        raise FleetError("the bundle is for %s but the board is %s: build one with `fleet build --board %s`"
                         % (bundle.board, board, board))
    if str(bundle.manifest["mpy"]) != ident["mpy"]:
        raise FleetError("the bundle holds .mpy v%s but the board's MicroPython %s loads .mpy v%s: rebuild the bundle "
                         "for it, or update its firmware" % (bundle.manifest["mpy"], ident["micropython"], ident["mpy"]))


class Observer:
    """What a flash reports as it goes; the CLI draws it, tests hook faults into it."""

    def stage(self, text: str) -> None:
        """A step begins ("copying 12 files on the board")."""

    def sending(self, total_bytes: int) -> None:
        """Sending over serial begins: `total_bytes` will go."""

    def sent(self, nbytes: int) -> None:
        """`nbytes` more bytes left for the board."""

    def file_done(self, rel: str, action: str) -> None:
        """A bundle file is in place: action is "sent" or "copied"."""

    def close(self) -> None:
        """The flash is over (done or failed)."""


def held_files(session) -> dict[str, str]:
    """{path: first HELD_DIGITS of its sha256} of the root files (and their leftover temp files) and of
    everything in /app: enough to tell files apart (the verification after writing uses whole hashes)."""
    roots = ["/" + rel for rel in ROOT_FILES] + ["/%s.tmp" % rel for rel in ROOT_FILES]
    held = session.file_hashes(roots, HELD_DIGITS)
    held.update(session.file_hashes(APP, HELD_DIGITS))
    held.pop(ACTIVE, None)
    held.pop(ACTIVE + ".new", None)
    return held


def flash(session, bundle: Bundle, observer: Observer | None = None, ident: dict | None = None) -> dict:
    """Install `bundle` on the board of an open session and restart it; the summary (see `summarise`).

    On an error the board is restarted when it still answers, so its old agent runs again.
    """
    observer = observer or Observer()
    started = time.monotonic()
    try:
        ident = ident or session.identify()
        check_compatible(bundle, ident)
        plan = Plan(bundle, ident["slot"], held_files(session))
        plan.check_fits(ident["flash_free"], ident["flash_block"])
        send_seconds = 0.0 if plan.up_to_date else _apply(session, bundle, plan, observer)
    except FleetError:
        if not session.broken:
            with contextlib.suppress(FleetError):
                session.soft_reset()
        raise
    observer.stage("restarting the board")
    session.soft_reset()
    return summarise(session, ident, bundle, plan, time.monotonic() - started, send_seconds)


def _apply(session, bundle: Bundle, plan: Plan, observer: Observer) -> float:
    """Carry out the plan, switch last; the seconds spent sending."""
    for folder in plan.folders():
        session.makedirs(folder)
    for path in plan.remove + plan.root_leftovers:
        session.remove(path)
    if plan.copy:
        observer.stage("copying %d files on the board" % len(plan.copy))
        session.copy_files_atomic((board_path(rel, plan.active or ""), board_path(rel, plan.target))
                                  for rel in plan.copy)
        for rel in plan.copy:
            observer.file_done(rel, "copied")
    total = plan.bytes_to_send()
    if total or plan.send or plan.root:
        observer.stage("sending %d files (%d bytes)" % (len(plan.send) + len(plan.root), total))
        observer.sending(total)
    # Slot files first, root files after: the root files change only once the new app is complete.
    started = time.monotonic()
    if plan.send:
        names = {board_path(rel, plan.target): rel for rel in plan.send}
        session.write_files_atomic([(path, bundle.data[rel]) for path, rel in names.items()], observer.sent,
                                   lambda path: observer.file_done(names[path], "sent"))
    send_seconds = time.monotonic() - started
    observer.stage("verifying slot %s" % plan.target)
    _verify(session, plan)
    if plan.root:
        started = time.monotonic()
        root_sent = [(board_path(rel, plan.target), bundle.data[rel]) for rel in plan.root]
        session.write_files_atomic(root_sent, observer.sent,
                                   lambda path: observer.file_done(path.lstrip("/"), "sent"))
        send_seconds += time.monotonic() - started
        observer.stage("verifying the root files")
        _verify_root(session, bundle, plan)
    if plan.switch:
        observer.stage("switching to slot %s" % plan.target)
        session.write_text(ACTIVE + ".new", plan.target)
        session.rename(ACTIVE + ".new", ACTIVE)  # the one atomic step that makes the new app the one to run
    return send_seconds


def _verify(session, plan: Plan) -> None:
    """Every file of the target slot, hashed whole on the board, against the bundle: one digest over
    them all, and file by file only to name what differs."""
    from fleet.board_session import folder_digest

    digest, count = session.folder_digest("%s/%s" % (APP, plan.target))
    if (digest, count) == (folder_digest(plan.expected), len(plan.expected)):
        return
    found = session.file_hashes("%s/%s" % (APP, plan.target))
    for path, sha in sorted(plan.expected.items()):
        if found.get(path) != sha:
            raise FleetError("verification failed: %s on the board %s; run the command again"
                             % (path, "is missing" if path not in found else "differs from the bundle"))
    extra = sorted(set(found) - set(plan.expected))
    if extra:
        raise FleetError("verification failed: %s should not be on the board; run the command again" % extra[0])


def _verify_root(session, bundle: Bundle, plan: Plan) -> None:
    hashes = bundle.hashes()
    found = session.file_hashes(["/" + rel for rel in plan.root])
    for rel in plan.root:
        if found.get("/" + rel) != hashes[rel]:
            raise FleetError("verification failed: /%s on the board differs from the bundle; run the command again" % rel)


def summarise(session, ident: dict, bundle: Bundle, plan: Plan, seconds: float, send_seconds: float) -> dict:
    """The flash's outcome as plain data (what `fleet flash --json` prints)."""
    sent = plan.send + plan.root
    sent_bytes = plan.bytes_to_send()
    return {
        "port": session.port, "uid": ident["uid"], "board": bundle.board, "micropython": ident["micropython"],
        "version": bundle.version, "previous_version": ident["app_version"],
        "slot": plan.target, "previous_slot": plan.active, "switched": plan.switch, "up_to_date": plan.up_to_date,
        "sent": sent, "copied": plan.copy, "kept": len(plan.keep), "removed": plan.remove,
        "bytes_sent": sent_bytes, "seconds": round(seconds, 3), "send_seconds": round(send_seconds, 3),
        "bytes_per_second": round(sent_bytes / send_seconds) if send_seconds > 0 else None,
        "line_share": round(sent_bytes / send_seconds / (session.baud / 10), 3) if send_seconds > 0 else None,
    }


#: Where MicroPython's image goes, by chip (micropython.org's download pages): the bootloader sits at
#: 0x1000 on the ESP32 and ESP32-S2, at 0 on the later chips.
_FIRMWARE_OFFSETS = {"ESP32": 0x1000, "ESP32-S2": 0x1000}
_ESP_IMAGE_MAGIC = 0xE9


def write_base_firmware(port: str, image: Path, erase: bool = False, baud: int = 460800) -> str:
    """Write a MicroPython firmware image to the ESP32 on `port` through esptool's public API, then
    hard-reset it; the chip's name. Only ESP32s (through their ROM bootloader) can take one."""
    import os

    data = Path(image).read_bytes()
    if not data or data[0] != _ESP_IMAGE_MAGIC:
        raise FleetError("%s is not an ESP32 firmware image (it does not start with 0xE9); download a MicroPython "
                         ".bin for the board" % image)
    if "://" not in port and os.path.realpath(port).startswith("/dev/pts/"):
        raise FleetError("%s is a pseudo-terminal (an emulated board?), not an ESP32's serial port: --base-firmware "
                         "needs an ESP32's ROM bootloader" % port)
    _refuse_other_micropython(port)
    import contextlib
    import sys

    from esptool.cmds import attach_flash, detect_chip, erase_flash, reset_chip, run_stub, write_flash
    from esptool.util import FatalError

    try:
        with contextlib.redirect_stdout(sys.stderr):  # esptool reports on stdout; ours may be --json
            with detect_chip(port, baud=115200, connect_attempts=3) as esp:
                chip = esp.CHIP_NAME
                if not chip.startswith("ESP32"):
                    raise FleetError("the chip on %s is an %s, not an ESP32" % (port, chip))
                esp = run_stub(esp)
                if baud != 115200:
                    esp.change_baud(baud)
                attach_flash(esp)
                if erase:
                    erase_flash(esp)
                write_flash(esp, [(_FIRMWARE_OFFSETS.get(chip, 0), data)])
                reset_chip(esp, "hard-reset")
    except (FatalError, OSError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise FleetError("esptool could not write the firmware on %s: %s"
                         % (port, lines[0] if lines else type(error).__name__)) from None
    _wait_for_prompt(port)
    return chip


def _wait_for_prompt(port: str, timeout: float = 30.0) -> None:
    """Wait for a fresh MicroPython's REPL prompt. Its first boot formats the flash: a Ctrl-C then
    (as opening a session sends) could interrupt that, so only a carriage return nudges it."""
    import serial

    seen = b""
    deadline = time.monotonic() + timeout
    with serial.serial_for_url(port, 115200, timeout=0.5) as line:
        while b">>> " not in seen:
            if time.monotonic() > deadline:
                raise FleetError("the board on %s did not reach the MicroPython prompt within %.0f s of the new "
                                 "firmware: is the image MicroPython for this chip?" % (port, timeout))
            line.write(b"\r")
            seen = (seen + line.read(512))[-512:]


def _refuse_other_micropython(port: str) -> None:
    """FleetError when MicroPython answers on `port` on something other than an ESP32 (an emulated
    board, an RP2040...); a silent port or an ESP32 goes on to esptool."""
    from fleet.board_session import BoardSession

    try:
        session = BoardSession.open(port, boot_timeout=2.0, attempts=1)
    except FleetError as error:
        if str(error).startswith("cannot open"):
            raise
        return  # nothing answers: a blank or crashed chip, which esptool can reach through its ROM
    with session:
        platform = session.identify()["platform"]
        session.soft_reset()
    if platform != "esp32":
        raise FleetError("the board on %s runs MicroPython on %r%s, not on an ESP32: --base-firmware writes an "
                         "ESP32's firmware only" % (port, platform, " (an emulated board)" if platform == "linux" else ""))
