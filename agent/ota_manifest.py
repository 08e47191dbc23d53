"""The signed release, read in place: the envelope's parts and the manifest's fields and files, walked over
the bytes (SPEC.md "OTA release") without building them.

protocols/manifest.py builds a Manifest (about 27 KB of heap for 62 files); here a manifest is a
memoryview and its files are read one by one when needed, so a check or an install holds only the
envelope's bytes (about 4 KB). The checks are the same: anything malformed raises ValueError, which the
caller reports as BAD_MANIFEST. Loaded for a check or an install and dropped afterwards.
"""

_BOARDS = ("esp32", "emulator")  # protocols/manifest.py BOARDS
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/"


def head(buf, i):
    """(major type, argument, index after the head) of the CBOR item at buf[i]; definite lengths only."""
    first = buf[i]
    arg = first & 31
    i += 1
    if arg >= 24:
        if arg > 27:
            raise ValueError("indefinite length at %d" % (i - 1))
        n = 1 << (arg - 24)
        if i + n > len(buf):
            raise ValueError("truncated at %d" % i)
        arg = 0
        for k in range(i, i + n):
            arg = arg << 8 | buf[k]
        i += n
    return first >> 5, arg, i


def _string(buf, i, major):
    # (start, end) of a byte (2) or text (3) string's contents at buf[i]
    kind, n, i = head(buf, i)
    if kind != major or i + n > len(buf):
        raise ValueError("expected a %s string at %d" % ("byte" if major == 2 else "text", i))
    return i, i + n


def text(buf, i, longest):
    """(str, index after) of a text string of 1..longest characters at buf[i]."""
    a, b = _string(buf, i, 3)
    value = str(bytes(buf[a:b]), "utf-8")
    if not 0 < len(value) <= longest:
        raise ValueError("text of %d characters at %d" % (len(value), i))
    return value, b


def uint(buf, i):
    """(value, index after) of an unsigned integer up to 2**32 - 1 at buf[i]."""
    kind, value, j = head(buf, i)
    if kind != 0 or value > 0xFFFFFFFF:
        raise ValueError("expected a uint32 at %d" % i)
    return value, j


def skip(buf, i, depth=4):
    """The index after the item at buf[i] (an unknown field's value)."""
    kind, n, i = head(buf, i)
    if kind in (2, 3):
        i += n
    elif kind in (4, 5):
        if depth < 1:
            raise ValueError("too deep at %d" % i)
        for _ in range(n * (2 if kind == 5 else 1)):
            i = skip(buf, i, depth - 1)
    elif kind == 7 and n > 23:
        raise ValueError("unsupported simple value at %d" % i)
    elif kind == 6:
        raise ValueError("tag at %d" % i)
    if i > len(buf):
        raise ValueError("truncated")
    return i


def envelope(buf):
    """(manifest start, manifest end, key id, signature) of a signed release: [bstr, bstr 8, bstr 64]."""
    kind, n, i = head(buf, 0)
    if kind != 4 or n != 3:
        raise ValueError("a signed release is an array of 3")
    start, end = _string(buf, i, 2)
    a, b = _string(buf, end, 2)
    c, d = _string(buf, b, 2)
    if b - a != 8 or d - c != 64 or d != len(buf) or end == start:
        raise ValueError("a signed release is [manifest, key id (8), signature (64)]")
    return start, end, bytes(buf[a:b]), bytes(buf[c:d])


def entry(buf, i):
    """(path, size, sha256, zsize, index after) of one file, [path, size, sha256, zsize], at buf[i]."""
    kind, n, i = head(buf, i)
    if kind != 4 or n != 4:
        raise ValueError("a file is [path, size, sha256, zsize]")
    path, i = text(buf, i, 64)
    for char in path:
        if char not in _PATH_CHARS:
            raise ValueError("bad character in %r" % path)
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ValueError("path %r is not relative to the slot" % path)
    size, i = uint(buf, i)
    a, b = _string(buf, i, 2)
    if b - a != 32:
        raise ValueError("sha256 of %r is not 32 bytes" % path)
    zsize, i = uint(buf, b)
    return path, size, bytes(buf[a:b]), zsize, i


def manifest(buf):
    """(seq, version, board, mpy, files index, file count) of the manifest in `buf` (a memoryview),
    every field and file checked (protocols/manifest.py Manifest.from_bytes); unknown keys are skipped."""
    kind, n, i = head(buf, 0)
    if kind != 5:
        raise ValueError("a manifest is a map")
    seen = 0
    seq = version = board = mpy = files = count = total = None
    for _ in range(n):
        kind, key, j = head(buf, i)
        if kind != 0 or key > 7:
            i = skip(buf, skip(buf, i))
            continue
        if seen & (1 << key):
            raise ValueError("key %d twice" % key)
        seen |= 1 << key
        i = j
        if key == 0:
            value, i = uint(buf, i)
            if value != 1:
                raise ValueError("format %d" % value)
        elif key == 1:
            seq, i = uint(buf, i)
        elif key == 2:
            version, i = text(buf, i, 32)
        elif key == 3:
            board, i = text(buf, i, 16)
        elif key == 4:
            mpy, i = text(buf, i, 8)
        elif key == 5:
            kind, count, i = head(buf, i)
            if kind != 4 or not 0 < count <= 128:
                raise ValueError("files must be an array of 1..128")
            files = i
            i = _files(buf, i, count)
        elif key == 6:
            _, i = text(buf, i, 200)
        else:
            total, i = uint(buf, i)
    if i != len(buf) or seen & 0xBF != 0xBF:
        raise ValueError("a manifest needs keys 0-5 and 7, and nothing after it")
    parts = str(mpy).split(".")
    if not seq or board not in _BOARDS or len(parts) != 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise ValueError("bad seq, board or mpy")
    if total != _files(buf, files, count, True):
        raise ValueError("total is not the sum of the file sizes")
    return seq, version, board, mpy, files, count


def _files(buf, i, count, sizes=False):
    # The index after the files array (each file checked, sorted and unique by path), or with `sizes`
    # the sum of their sizes.
    last = ""
    need = 0
    for _ in range(count):
        path, size, _, _, i = entry(buf, i)
        if path <= last:
            raise ValueError("files not sorted by path at %r" % path)
        last = path
        need += size
    return need if sizes else i
