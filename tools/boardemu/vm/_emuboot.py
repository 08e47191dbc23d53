# VM-side bootstrap of an emulated board (MicroPython code, run as `micropython -i _emuboot.py`).
#
# Does what a board's firmware does between reset and the REPL: mount the littlefs2 flash at "/",
# format it on first boot, run boot.py then main.py (main.py only outside raw-REPL mode, as
# pyexec does after a soft reset in raw REPL), then return so the unix port's `-i` REPL (pyexec:
# friendly, raw and raw-paste modes) takes over. The host reads two in-band markers from our stdout
# and strips them: "up" once the flash is mounted, "repl" just before the REPL starts.
import os
import sys
import time

import micropython
import vfs
from micropython import const

# Markers are OSC escape sequences: the host strips them; a terminal would ignore them anyway.
_UP = "\x1b]boardemu;up\x07"
_REPL = "\x1b]boardemu;repl\x07"

_BLOCK = const(4096)  # ESP32 flash sector: the erase unit and littlefs block size
_PAGE = const(256)  # NOR flash page: the program unit


class _Flash:
    """Block device on the image file: erase and program a page per write, as NOR flash does.

    Each page is its own write() call, so a power cut (SIGKILL) between two of them leaves a block
    half programmed: the torn write littlefs must survive on real flash.
    """

    def __init__(self, path, erase_us, prog_us):
        self._f = open(path, "r+b")
        self._f.seek(0, 2)
        self._count = self._f.tell() // _BLOCK
        self._erased = b"\xff" * _PAGE
        self._erase_us = erase_us
        self._prog_us = prog_us
        self._sleep_us = time.sleep_us  # bound now: the REPL may later drop this module's names

    def readblocks(self, block, buf, off=0):
        self._f.seek(block * _BLOCK + off)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        if off is None:
            self.ioctl(6, block)
            off = 0
        pos = block * _BLOCK + off
        if pos % _PAGE + len(buf) <= _PAGE:
            # littlefs programs at most its 128-byte cache at a time: one page, one write, and no
            # allocation, so this also works from a finaliser (heap locked) that closes a file.
            self._f.seek(pos)
            self._f.write(buf)
            if self._prog_us:
                self._sleep_us(self._prog_us)
        else:
            self._program(pos, memoryview(buf))

    def _program(self, pos, data):
        f = self._f
        done = 0
        while done < len(data):
            # Never cross a page boundary in one write: a page program is the flash's atomic unit.
            n = min(_PAGE - (pos + done) % _PAGE, len(data) - done)
            f.seek(pos + done)
            f.write(data[done : done + n])
            done += n
            if self._prog_us:
                self._sleep_us(self._prog_us)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self._count
        if op == 5:  # block size
            return _BLOCK
        if op == 6:  # erase: the sector reads back 0xFF; torn like a program when cut
            base = arg * _BLOCK
            step_us = self._erase_us // (_BLOCK // _PAGE)
            for page in range(_BLOCK // _PAGE):
                self._f.seek(base + page * _PAGE)
                self._f.write(self._erased)
                if step_us:
                    self._sleep_us(step_us)
            return 0
        return 0


_BOOT_PY = """\
# This file is executed on every boot (including wake-boot from deepsleep)
"""


def _hold_program_heap():
    """Claim the board's heap (BOARDEMU_HEAP bytes) in one block before the emulator loads anything.

    A board's machine and network modules are firmware in flash, and its heap is one free region at
    the REPL. Here they are Python in this VM's heap (given FIRMWARE_RESERVE extra), so the program's
    region is claimed first, low in the heap, and the emulator's own modules go above it.
    """
    import gc

    gc.collect()
    size = int(os.getenv("BOARDEMU_HEAP") or "0")
    return [bytearray(size)] if size else None


def _release_program_heap(flash, held):
    """Fill every free byte outside the held region, then free the region: the program gets exactly it.

    The fill (kept alive by the flash device) stands for what firmware keeps in flash: the emulator's
    modules and the garbage of loading them would otherwise leave the program a fragmented heap.
    """
    import gc

    if held is None:
        return
    fill = [None] * 160
    flash.firmware_share = fill  # before filling: setting an attribute allocates
    slots = range(len(fill))
    gc.collect()
    size = gc.mem_free()
    for slot in slots:
        while size >= 48:
            try:
                fill[slot] = bytearray(size - 32)  # the block header and rounding: 32 bytes
                break
            except MemoryError:
                size = size * 3 // 4
        size = gc.mem_free()
    held[0] = None
    gc.collect()


def _mount():
    flash = _Flash(
        os.getenv("BOARDEMU_FLASH"),
        int(os.getenv("BOARDEMU_FLASH_ERASE_US") or "0"),
        int(os.getenv("BOARDEMU_FLASH_PROG_US") or "0"),
    )
    fresh = False
    try:
        fs = vfs.VfsLfs2(flash)
    except OSError:
        # First boot (blank 0xFF image) or an unmountable image: format, as the firmware's inisetup does.
        vfs.VfsLfs2.mkfs(flash)
        fs = vfs.VfsLfs2(flash)
        fresh = True
    vfs.umount("/")
    vfs.mount(fs, "/")
    os.chdir("/")
    if fresh:
        with open("boot.py", "w") as f:
            f.write(_BOOT_PY)
    sys.path[:] = ["", ".frozen", "/lib"]
    sys.atexit(_at_exit)
    return flash


def _at_exit():
    # The unix port exits where a board soft-reboots; a board's soft reset first runs the finalisers
    # of dead objects (gc_sweep_all), which closes files left open at the REPL, so their data is kept.
    # Imports are local: the REPL may have dropped this module's globals by now.
    import gc

    import vfs

    gc.collect()
    try:
        vfs.umount("/")
    except OSError:
        pass  # nothing mounted: the bootstrap failed before mounting


def _exists(name):
    try:
        os.stat(name)
        return True
    except OSError:
        return False


def _print_exception(e):
    """Print a traceback as a board does: without this bootstrap's own frames."""
    import io

    text = io.StringIO()
    sys.print_exception(e, text)
    for line in text.getvalue().split("\n"):
        if line and "_emuboot.py" not in line:
            print(line)


def _run(name):
    """Run a flash file in the REPL's globals, as pyexec_file_if_exists does; report errors like it."""
    if not _exists(name):
        return
    micropython.kbd_intr(3)
    try:
        execfile(name)  # noqa: F821 -- unix-port builtin; streams the file, keeps its name in tracebacks
    except SystemExit:
        raise  # the host turns the VM's exit into a soft reboot, as sys.exit() on a board does
    except BaseException as e:  # noqa: B036 -- a board prints any error of main.py and goes on to the REPL
        _print_exception(e)
    finally:
        micropython.kbd_intr(-1)


def _boot():
    # Ctrl-C cannot stop the bootstrap itself (a half-done mount would leave no filesystem).
    micropython.kbd_intr(-1)
    held = _hold_program_heap()
    if os.getenv("BOARDEMU_HW") == "1":
        import _emuhw  # noqa: F401 -- E2's machine, network...; must be loaded before "/" is remounted
    _release_program_heap(_mount(), held)
    sys.stdout.write(_UP)
    _run("boot.py")
    if os.getenv("BOARDEMU_REPL") != "raw":
        _run("main.py")
    sys.stdout.write(_REPL)


# Leave the REPL the globals a board's __main__ has: __name__ and what boot.py and main.py defined.
# Nothing needs the bootstrap's names any more (the block device and exit hook hold what they use).
_MINE = [name for name in globals() if name != "__name__"]
_boot()
for _name in _MINE + ["_MINE", "_name"]:
    globals().pop(_name, None)
