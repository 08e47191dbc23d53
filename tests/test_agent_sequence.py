"""Boot id and sequence numbers: unique across reboots, reserved in blocks, wrapping at 2**32; the
case_* functions run under CPython and under the MicroPython VM."""

try:
    import pytest
except ImportError:  # under the MicroPython VM only the case_* functions and run_cases() are used
    pytest = None

import os
import struct

from agent import flashio
from agent.sequence import Sequence


def _writes(path):
    # flashio writes path + ".tmp" then renames it: count how often the reservation changed on flash
    return struct.unpack("<II", flashio.read(path))


def case_new_device_starts_at_boot_1_seq_0(tmp):
    s = Sequence(tmp + "/seq")
    assert (s.boot, s.next(), s.next(), s.next()) == (1, 0, 1, 2)
    assert not s.recovered


def case_numbers_never_repeat_across_reboots(tmp):
    path = tmp + "/seq"
    seen = set()
    boots = []
    for used in (0, 1, 5, 8, 9, 3, 16, 17):
        s = Sequence(path, block=8)
        boots.append(s.boot)
        for _ in range(used):
            key = s.next()
            assert key not in seen
            seen.add(key)
    assert boots == list(range(1, 9))
    # a reboot skips at most block - 1 numbers
    s = Sequence(path, block=8)
    assert s.next() - max(seen) <= 8


def case_flash_is_written_once_per_block(tmp):
    path = tmp + "/seq"
    s = Sequence(path, block=256)
    assert _writes(path) == (1, 256)
    for _ in range(256):
        s.next()
    assert _writes(path) == (1, 256)  # the 256 numbers of the first block cost no write
    s.next()
    assert _writes(path) == (1, 512)


def case_wraps_at_2_pow_32(tmp):
    path = tmp + "/seq"
    flashio.write(path, struct.pack("<II", 7, 0xFFFFFFFE))
    s = Sequence(path, block=4)
    assert s.boot == 8
    assert [s.next() for _ in range(4)] == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1]
    assert Sequence(path, block=4).next() == 2


def case_corrupt_state_gets_a_random_boot_id(tmp):
    path = tmp + "/seq"
    Sequence(path)
    with open(path, "r+b") as f:
        f.write(b"\xff")
    s = Sequence(path)
    assert s.recovered and s.boot & 1 and s.next() == 0


def case_cut_between_fat_remove_and_rename_uses_the_tmp_copy(tmp):
    path = tmp + "/seq"
    Sequence(path, block=16)
    os.rename(path, path + flashio.TMP)  # what a cut in the FAT driver's remove-then-rename leaves
    s = Sequence(path, block=16)
    assert s.boot == 2 and s.next() == 16 and not s.recovered


def run_cases(tmp):
    """Run every case_* function (the MicroPython VM calls this) in subdirectories of `tmp`."""
    names = [name for name in sorted(globals()) if name.startswith("case_")]
    for name in names:
        os.mkdir(tmp + "/" + name)
        globals()[name](tmp + "/" + name)
    print("ok", len(names))


if pytest is not None:
    from tests.mpvm import check_micropython

    CASES = [name for name in sorted(globals()) if name.startswith("case_")]

    @pytest.mark.parametrize("name", CASES)
    def test_case_under_cpython(name, tmp_path):
        globals()[name](str(tmp_path))

    @pytest.mark.micropython
    def test_cases_under_micropython(tmp_path):
        out = check_micropython(f"import tests.test_agent_sequence as t\nt.run_cases({str(tmp_path)!r})",
                                heap="110k")
        assert f"ok {len(CASES)}" in out
