"""Small files on flash written atomically, with a CRC, for the agent's state (config, alarms, sequence).

write(path, data) writes `data` + CRC32 to `path + ".tmp"`, then os.rename()s it over `path`. A power cut
leaves either the old file or the new one: before the rename the old file is intact; littlefs and POSIX
replace in one step; MicroPython's FAT driver removes the target then renames, so a cut there leaves only
the ".tmp", which read() takes when `path` is missing. The CRC rejects a torn ".tmp" (a cut mid-write on a
device that never had `path`). Only os.rename/os.remove/open are used (no os.path on MicroPython).
"""

try:
    from binascii import crc32
except ImportError:  # a MicroPython build without MICROPY_PY_BINASCII_CRC32
    crc32 = None

import os

TMP = ".tmp"


def checksum(data, crc=0):
    """CRC-32 (IEEE, as zlib) of `data` continuing from `crc`; binascii's when the build has it."""
    if crc32 is not None:
        return crc32(data, crc) & 0xFFFFFFFF
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def exists(path):
    """True if `path` names an existing file or directory."""
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def remove(path):
    """Remove `path`; a missing file is not an error."""
    try:
        os.remove(path)
    except OSError:
        pass


def write(path, data):
    """Replace the file at `path` by `data` (bytes) atomically, with a CRC32 trailer."""
    tmp = path + TMP
    crc = checksum(data)
    with open(tmp, "wb") as f:
        f.write(data)
        f.write(bytes((crc & 0xFF, (crc >> 8) & 0xFF, (crc >> 16) & 0xFF, crc >> 24)))
    os.rename(tmp, path)


def _read_checked(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    if len(raw) < 4:
        return None
    body = raw[:-4]
    crc = raw[-4] | (raw[-3] << 8) | (raw[-2] << 16) | (raw[-1] << 24)
    return body if checksum(body) == crc else None


def read(path):
    """The bytes last written with write(), or None when there are none (missing or corrupt)."""
    data = _read_checked(path)
    if data is None and not exists(path):
        data = _read_checked(path + TMP)  # the FAT driver's remove-then-rename was cut
    return data
