"""Signed OTA release: the manifest, its signed envelope and the trust list (SPEC.md "OTA release").

The fleet builds a `Manifest`, encodes it (`to_bytes`), signs those exact bytes with Ed25519 and wraps
manifest, key id and signature in the envelope (`signed`). The device reads the envelope (`read_signed`),
checks the signature over the manifest bytes with a key from its slot's trust.cbor (`read_trust`,
`trusted_key`) and only then decodes the manifest (`Manifest.from_bytes`). Every rejection is a
ProtocolError whose reason is an OTA reason code (BAD_MANIFEST, BAD_SIGNATURE, UNTRUSTED_KEY).

Runs unchanged on MicroPython (no typing, no dataclasses); decoding uses protocols.cbor_lite, the
node's small reader, on both sides so the fleet refuses what a device would refuse.
"""

import hashlib

from protocols import cbor_lite
from protocols.cbor import dumps
from protocols.errors import ProtocolError
from protocols.fields import UINT32_MAX, is_int

FORMAT = 1
BOARDS = ("esp32", "emulator")
BAD_MANIFEST = "BAD_MANIFEST"
BAD_SIGNATURE = "BAD_SIGNATURE"
UNTRUSTED_KEY = "UNTRUSTED_KEY"
KEY_ID_SIZE = 8
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SHA256_SIZE = 32
#: A manifest is decoded whole on the device: these bound its heap (61 files today, about 4.5 KB).
MAX_FILES = 128
MAX_MANIFEST = 16384
MAX_PATH = 64
MAX_VERSION = 32
MAX_NOTES = 200
#: Keys a slot may trust at once (a rotation needs two).
MAX_TRUST = 8
#: Characters of a file path: what littlefs and every shell handle without quoting.
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/"


def _bad(detail, reason=BAD_MANIFEST):
    raise ProtocolError(reason, detail)


def _uint(value, name):
    if not is_int(value) or value < 0 or value > UINT32_MAX:
        _bad("%s must be an integer 0..%d, not %r" % (name, UINT32_MAX, value))
    return value


def _text(value, name, longest):
    if not isinstance(value, str) or not value or len(value) > longest:
        _bad("%s must be text of 1..%d characters, not %r" % (name, longest, value))
    return value


def _bstr(value, name, size, reason=BAD_MANIFEST):
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        _bad("%s must be %d bytes" % (name, size), reason)
    return bytes(value)


def _mpy(value):
    # "6.3": the .mpy major.minor version the firmware loads (firmware/build.py BOARDS)
    _text(value, "mpy", 8)
    parts = value.split(".")
    if len(parts) != 2 or not all(part and part.isdigit() for part in parts):
        _bad("mpy must look like '6.3', not %r" % value)
    return value


def _path(value):
    _text(value, "file path", MAX_PATH)
    for char in value:
        if char not in _PATH_CHARS:
            _bad("file path %r has a character outside a-z A-Z 0-9 . _ - /" % value)
    for part in value.split("/"):
        if part in ("", ".", ".."):
            _bad("file path %r must be relative to the slot, without empty, . or .. parts" % value)
    return value


def _entry(value):
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        _bad("a file must be [path, size, sha256, zsize]")
    _path(value[0])
    _uint(value[1], "file size")
    _bstr(value[2], "file sha256", SHA256_SIZE)
    _uint(value[3], "file zsize")
    if isinstance(value, list) and isinstance(value[2], bytes):
        return value  # as decoded: kept, not copied (the device decodes the manifest in little heap)
    return [value[0], value[1], bytes(value[2]), value[3]]


def _files(value, ordered):
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_FILES:
        _bad("files must be an array of 1..%d files" % MAX_FILES)
    if not ordered:
        value = [_entry(item) for item in value]
        value.sort(key=lambda entry: entry[0])
    elif not isinstance(value, list):
        value = list(value)
    for i in range(len(value)):
        entry = value[i] = _entry(value[i])
        if i and value[i - 1][0] >= entry[0]:
            if value[i - 1][0] == entry[0]:
                _bad("file %r is listed twice" % entry[0])
            _bad("files must be sorted by path (%r comes after %r)" % (entry[0], value[i - 1][0]))
    return value


class Manifest:
    """Release `seq` (>= 1, strictly increasing per fleet) of `version` for `board` and `.mpy` version
    `mpy`: `files` are [path, size, sha256, zsize] relative to the slot (sorted here by path; `ordered`
    demands they come sorted, as decoding does), `notes` optional, `total` the bytes the files take (their
    sizes' sum, computed when left out)."""

    def __init__(self, seq, version, board, mpy, files, notes=None, total=None, ordered=False):
        if _uint(seq, "seq") == 0:
            _bad("seq starts at 1")
        self.seq = seq
        self.version = _text(version, "version", MAX_VERSION)
        if board not in BOARDS:
            _bad("board must be one of %s, not %r" % (", ".join(BOARDS), board))
        self.board = board
        self.mpy = _mpy(mpy)
        self.files = _files(files, ordered)
        self.notes = None if notes is None else _text(notes, "notes", MAX_NOTES)
        need = 0
        for entry in self.files:
            need += entry[1]
        if total is None:
            total = need
        elif _uint(total, "total") != need:
            _bad("total is %d but the files take %d bytes" % (total, need))
        self.total = total

    def to_obj(self):
        """Keys 0 format, 1 seq, 2 version, 3 board, 4 mpy, 5 files, 6 notes (optional), 7 total."""
        out = {0: FORMAT, 1: self.seq, 2: self.version, 3: self.board, 4: self.mpy, 5: self.files,
               7: self.total}
        if self.notes is not None:
            out[6] = self.notes
        return out

    def to_bytes(self):
        """The manifest's one encoding (preferred serialization, sorted keys): the bytes that get signed."""
        return dumps(self.to_obj())

    @classmethod
    def from_obj(cls, obj):
        """Validate a decoded manifest map; unknown keys are ignored (fields are only ever added)."""
        if not isinstance(obj, dict):
            _bad("a manifest must be a CBOR map")
        for key, name in ((0, "format"), (1, "seq"), (2, "version"), (3, "board"), (4, "mpy"), (5, "files"),
                          (7, "total")):
            if key not in obj:
                _bad("%s (key %d) is required" % (name, key))
        if not is_int(obj[0]) or obj[0] != FORMAT:
            _bad("format %r is not %d" % (obj[0], FORMAT))
        return cls(obj[1], obj[2], obj[3], obj[4], obj[5], obj.get(6), obj[7], ordered=True)

    @classmethod
    def from_bytes(cls, data):
        """Decode and validate manifest bytes (the envelope's first element, after its signature checked)."""
        if len(data) > MAX_MANIFEST:
            _bad("manifest of %d bytes exceeds %d" % (len(data), MAX_MANIFEST))
        try:
            obj = cbor_lite.loads(data, 3)  # map > files > file
        except ValueError as error:
            _bad(str(error))
        return cls.from_obj(obj)


def key_id(public_key):
    """The 8-byte id of a raw 32-byte Ed25519 public key: the first bytes of its SHA-256."""
    return hashlib.sha256(_bstr(public_key, "public key", PUBLIC_KEY_SIZE)).digest()[:KEY_ID_SIZE]


def signed(manifest_bytes, kid, signature):
    """The signed release: CBOR [manifest bytes, key id (8 bytes), Ed25519 signature (64 bytes)]."""
    if not isinstance(manifest_bytes, (bytes, bytearray)) or not manifest_bytes:
        _bad("the manifest must be non-empty bytes")
    if len(manifest_bytes) > MAX_MANIFEST:
        _bad("manifest of %d bytes exceeds %d" % (len(manifest_bytes), MAX_MANIFEST))
    return dumps([bytes(manifest_bytes), _bstr(kid, "key id", KEY_ID_SIZE),
                  _bstr(signature, "signature", SIGNATURE_SIZE, BAD_SIGNATURE)])


def read_signed(data):
    """(manifest bytes, key id, signature) of a signed release; the signature is not checked here."""
    if len(data) > MAX_MANIFEST + 128:
        _bad("signed release of %d bytes exceeds %d" % (len(data), MAX_MANIFEST + 128))
    try:
        obj = cbor_lite.loads(data, 1)  # one array of byte strings
    except ValueError as error:
        _bad("signed release: " + str(error))
    if not isinstance(obj, list) or len(obj) != 3:
        _bad("a signed release must be [manifest, key id, signature]")
    manifest = obj[0]
    if not isinstance(manifest, bytes) or not manifest:
        _bad("the signed manifest must be non-empty bytes")
    return manifest, _bstr(obj[1], "key id", KEY_ID_SIZE), _bstr(obj[2], "signature", SIGNATURE_SIZE,
                                                                  BAD_SIGNATURE)


def trust_bytes(keys):
    """trust.cbor: CBOR array of the raw 32-byte Ed25519 public keys a slot accepts releases from."""
    return dumps(_keys(keys))


def read_trust(data):
    """The public keys listed in trust.cbor bytes; UNTRUSTED_KEY when it is unreadable or empty."""
    try:
        obj = cbor_lite.loads(data, 1)
    except ValueError as error:
        _bad("trust list: " + str(error), UNTRUSTED_KEY)
    return _keys(obj)


def _keys(keys):
    if not isinstance(keys, (list, tuple)) or not keys or len(keys) > MAX_TRUST:
        _bad("a trust list must hold 1..%d public keys" % MAX_TRUST, UNTRUSTED_KEY)
    out = []
    for key in keys:
        key = _bstr(key, "a trusted public key", PUBLIC_KEY_SIZE, UNTRUSTED_KEY)
        if key in out:
            _bad("a trust list names a key twice", UNTRUSTED_KEY)
        out.append(key)
    return out


def trusted_key(keys, kid):
    """The key among `keys` whose id is `kid`, else ProtocolError(UNTRUSTED_KEY)."""
    for key in keys:
        if key_id(key) == kid:
            return key
    _bad("key id %s is not in this slot's trust list" % "".join("%02x" % b for b in kid), UNTRUSTED_KEY)
