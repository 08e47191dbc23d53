"""SHA-512 (FIPS 180-4) in pure Python, for the device: MicroPython's hashlib has no sha512, and
Ed25519 (agent/ed25519.py) hashes with it.

Words are 64 bits. On a 64-bit MicroPython port an int up to 62 bits is a small int (no heap), so there
the words are kept as 32-bit halves: about 3.5x faster in the VM than 64-bit words, each of which is
a heap-allocated big int. On a 32-bit port (ESP32: 31-bit small ints) halves would be big ints too, at
twice the operations, so there, and under CPython, the 64-bit form runs.
"""

import struct
import sys
from array import array

# FIPS 180-4 §4.2.3: the first 64 bits of the fractional parts of the cube roots of the first 80
# primes, big-endian. A bytes literal: a .mpy keeps every constant of a module for as long as any of its
# functions lives, so a hex text to decode would stay on the heap beside the bytes.
_K = (
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)
# §5.3.5: the initial hash value.
_IV = (
    b"\x6a\x09\xe6\x67\xf3\xbc\xc9\x08\xbb\x67\xae\x85\x84\xca\xa7\x3b"
    b"\x3c\x6e\xf3\x72\xfe\x94\xf8\x2b\xa5\x4f\xf5\x3a\x5f\x1d\x36\xf1"
    b"\x51\x0e\x52\x7f\xad\xe6\x82\xd1\x9b\x05\x68\x8c\x2b\x3e\x6c\x1f"
    b"\x1f\x83\xd9\xab\xfb\x41\xbd\x6b\x5b\xe0\xcd\x19\x13\x7e\x21\x79"
)
_M64 = 0xFFFFFFFFFFFFFFFF
_M32 = 0xFFFFFFFF

# Halves are small ints only on a 64-bit MicroPython port.
_SPLIT = sys.implementation.name == "micropython" and sys.maxsize > _M32
_WORDS = [None, None]  # the round constants unpacked: [0] as 64-bit words, [1] as 32-bit halves


class Sha512:
    """Incremental SHA-512: update(data) any number of times, then digest() (64 bytes)."""

    def __init__(self, data=None):
        self._split = split = 1 if _SPLIT else 0
        if _WORDS[split] is None:
            _WORDS[split] = _words(">I" if split else ">Q")
        self._fmt = ">16I" if split else ">8Q"  # the state: hi, lo, hi, lo... halves or whole words
        self._h = list(struct.unpack(self._fmt, _IV))
        self._w = array("I", bytes(640)) if split else array("Q", bytes(640))
        self._buf = bytearray(128)
        self._used = 0  # bytes waiting in _buf
        self._len = 0  # bytes hashed in all
        if data:
            self.update(data)

    def update(self, data):
        """Hash `data` (bytes, bytearray or memoryview) after what came before."""
        n = len(data)
        if not n:
            return
        self._len += n
        compress = _compress32 if self._split else _compress64
        buf = self._buf
        used = self._used
        mv = memoryview(data)
        off = 0
        if used:
            off = min(128 - used, n)
            buf[used:used + off] = mv[:off]
            used += off
            if used < 128:
                self._used = used
                return
            compress(self._h, buf, 0, self._w)
        # whole blocks straight from the caller's buffer, no copy
        while n - off >= 128:
            compress(self._h, data, off, self._w)
            off += 128
        self._used = n - off
        buf[0:n - off] = mv[off:]

    def digest(self):
        """The 64-byte digest of everything hashed so far (more update() calls may follow)."""
        h = list(self._h)
        used = self._used
        tail = bytearray(256)  # §5.1.2 padding: 0x80, zeros, 128-bit big-endian bit length
        tail[0:used] = self._buf[0:used]
        tail[used] = 0x80
        end = 128 if used < 112 else 256
        struct.pack_into(">QQ", tail, end - 16, self._len >> 61, (self._len << 3) & _M64)
        compress = _compress32 if self._split else _compress64
        for off in range(0, end, 128):
            compress(h, tail, off, self._w)
        return struct.pack(self._fmt, *h)


def _words(fmt):
    # _K as an array of 64-bit words (">Q") or 32-bit halves (">I"), unpacked one at a time: 640 bytes,
    # where a tuple of 80 big ints would take several KB on the way
    size = struct.calcsize(fmt)
    words = array(fmt[1], bytes(640))
    for i in range(640 // size):
        words[i] = struct.unpack_from(fmt, _K, i * size)[0]
    return words


def _compress64(h, block, off, w):
    # FIPS 180-4 §6.4.2 on 64-bit words. A rotation is a shift of the word doubled to 128 bits
    # (x | x << 64): fewer big-int operations than two shifts and an or per rotation.
    M = _M64
    K = _WORDS[0]
    w[0:16] = array("Q", struct.unpack_from(">16Q", block, off))
    for t in range(16, 80):
        x = w[t - 15]
        xx = x | (x << 64)
        y = w[t - 2]
        yy = y | (y << 64)
        w[t] = (w[t - 16] + w[t - 7] + ((((xx >> 1) ^ (xx >> 8)) & M) ^ (x >> 7))
                + ((((yy >> 19) ^ (yy >> 61)) & M) ^ (y >> 6))) & M
    a, b, c, d, e, f, g, hh = h
    for t in range(80):
        ee = e | (e << 64)
        t1 = hh + (((ee >> 14) ^ (ee >> 18) ^ (ee >> 41)) & M) + (g ^ (e & (f ^ g))) + K[t] + w[t]
        aa = a | (a << 64)
        t2 = (((aa >> 28) ^ (aa >> 34) ^ (aa >> 39)) & M) + ((a & b) | (c & (a | b)))
        hh = g
        g = f
        f = e
        e = (d + t1) & M
        d = c
        c = b
        b = a
        a = (t1 + t2) & M
    v = (a, b, c, d, e, f, g, hh)
    for j in range(8):
        h[j] = (h[j] + v[j]) & M


def _compress32(h, block, off, w):
    # The same on (hi, lo) halves: w and h alternate hi, lo. Rotations by n < 32 take bits from the
    # other half; by n >= 32 they swap halves and rotate by n - 32. Every intermediate stays under
    # 2**62 (a shift left by 31 is masked first), so nothing leaves the small ints.
    M = _M32
    K = _WORDS[1]
    w[0:32] = array("I", struct.unpack_from(">32I", block, off))
    for i in range(32, 160, 2):
        xh = w[i - 30]
        xl = w[i - 29]
        # sigma0 = ROTR1 ^ ROTR8 ^ SHR7
        s0h = ((xh >> 1) | ((xl & 1) << 31)) ^ ((xh >> 8) | (xl << 24)) ^ (xh >> 7)
        s0l = ((xl >> 1) | ((xh & 1) << 31)) ^ ((xl >> 8) | (xh << 24)) ^ ((xl >> 7) | (xh << 25))
        yh = w[i - 4]
        yl = w[i - 3]
        # sigma1 = ROTR19 ^ ROTR61 ^ SHR6
        s1h = ((yh >> 19) | (yl << 13)) ^ ((yl >> 29) | (yh << 3)) ^ (yh >> 6)
        s1l = ((yl >> 19) | (yh << 13)) ^ ((yh >> 29) | (yl << 3)) ^ ((yl >> 6) | (yh << 26))
        lo = w[i - 31] + w[i - 13] + (s0l & M) + (s1l & M)
        w[i + 1] = lo & M
        w[i] = (w[i - 32] + w[i - 14] + (s0h & M) + (s1h & M) + (lo >> 32)) & M
    ah, al, bh, bl, ch, cl, dh, dl, eh, el, fh, fl, gh, gl, hh, hl = h
    for i in range(0, 160, 2):
        # Sigma1 = ROTR14 ^ ROTR18 ^ ROTR41
        s1h = ((eh >> 14) | (el << 18)) ^ ((eh >> 18) | (el << 14)) ^ ((el >> 9) | (eh << 23))
        s1l = ((el >> 14) | (eh << 18)) ^ ((el >> 18) | (eh << 14)) ^ ((eh >> 9) | (el << 23))
        lo = hl + (s1l & M) + (gl ^ (el & (fl ^ gl))) + K[i + 1] + w[i + 1]
        t1h = hh + (s1h & M) + (gh ^ (eh & (fh ^ gh))) + K[i] + w[i] + (lo >> 32)
        t1l = lo & M
        # Sigma0 = ROTR28 ^ ROTR34 ^ ROTR39
        s0h = ((ah >> 28) | (al << 4)) ^ ((al >> 2) | (ah << 30)) ^ ((al >> 7) | (ah << 25))
        s0l = ((al >> 28) | (ah << 4)) ^ ((ah >> 2) | (al << 30)) ^ ((ah >> 7) | (al << 25))
        t2l = (s0l & M) + ((al & bl) | (cl & (al | bl)))
        t2h = (s0h & M) + ((ah & bh) | (ch & (ah | bh)))
        hh = gh
        hl = gl
        gh = fh
        gl = fl
        fh = eh
        fl = el
        lo = dl + t1l
        el = lo & M
        eh = (dh + t1h + (lo >> 32)) & M
        dh = ch
        dl = cl
        ch = bh
        cl = bl
        bh = ah
        bl = al
        lo = t1l + t2l
        al = lo & M
        ah = (t1h + t2h + (lo >> 32)) & M
    v = (ah, al, bh, bl, ch, cl, dh, dl, eh, el, fh, fl, gh, gl, hh, hl)
    for j in range(0, 16, 2):
        lo = h[j + 1] + v[j + 1]
        h[j + 1] = lo & M
        h[j] = (h[j] + v[j] + (lo >> 32)) & M
