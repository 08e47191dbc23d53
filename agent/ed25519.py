"""Ed25519 signature verification (RFC 8032 §5.1.7) in pure Python, for checking OTA releases on the
device: MicroPython has no Ed25519. Verify only; signing happens on the fleet side (`cryptography`).

The check is cofactorless, [S]B == R + [k]A, as OpenSSL (and so `cryptography`) does it: computed as
one double-scalar multiplication [S]B + [k](-A) (Shamir's trick: one doubling per bit, an addition where
either scalar has a 1) in extended twisted-Edwards coordinates, compared with R without an inversion.
Field elements are ints mod p, reduced after every product; sums and differences are left unreduced
until the next product. No tables beyond the three points B, -A and B - A: a verify runs in about 8 KB
of free heap (MicroPython VM, 64-bit), most of it big-int temporaries between collections.
"""

from agent.sha512 import Sha512

_P = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED  # 2**255 - 19
_L = 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED  # order of B
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555  # -121665/121666
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161  # 2d
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752  # 2**((p-1)/4)
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960  # 4/5


def verify(public_key, message, signature):
    """True if `signature` (64 bytes) is a valid Ed25519 signature of `message` by `public_key`
    (32 bytes); False for anything else, including a malformed key or signature."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:  # §5.1.7 step 1: reject a malleable S
        return False
    a = decode_point(public_key)
    r = decode_point(signature[:32])
    if a is None or r is None:
        return False
    h = Sha512(signature[:32])
    h.update(public_key)
    h.update(message)
    k = int.from_bytes(h.digest(), "little") % _L
    x, y, z = _mul_sub(s, k, a[0], a[1])
    return (x - r[0] * z) % _P == 0 and (y - r[1] * z) % _P == 0


def decode_point(data):
    """The affine point (x, y) a 32-byte encoding names (RFC 8032 §5.1.3), or None if the encoding is
    not canonical (y >= p, or x = 0 with the sign bit set) or names no point on the curve."""
    P = _P
    y = int.from_bytes(data, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    yy = y * y % P
    u = yy - 1
    v = (_D * yy + 1) % P
    v3 = v * v % P * v % P
    # x = u v^3 (u v^7)^((p-5)/8), a square root of u/v when one exists (§5.1.3 step 2)
    x = u * v3 % P * pow(u * v3 % P * v3 % P * v % P, (P - 5) >> 3, P) % P
    vxx = v * x % P * x % P
    if vxx != u % P:
        if vxx != -u % P:
            return None
        x = x * _SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x, y


def _mul_sub(s, k, ax, ay):
    # [s]B + [k](-A) as projective (X, Y, Z). Addends are kept "cached": (Y+X, Y-X, 2d*T, Z).
    P = _P
    nx = P - ax  # -A = (-x, y)
    bt = _BX * _BY % P
    b = _cached(_BX, _BY, 1, bt)
    na = _cached(nx, ay, 1, nx * ay % P)
    ba = _cached(*_add(_BX, _BY, 1, bt, na))
    table = (None, b, na, ba)
    X, Y, Z, T = 0, 1, 1, 0  # the neutral element
    i = 252  # s, k < L < 2**253 (doubling the neutral element while their top bits are 0 is cheap)
    while i >= 0:
        # dbl-2008-hwcd with a = -1, its E, F, G, H negated in pairs (the products do not change)
        xx = X * X % P
        yy = Y * Y % P
        h = xx + yy
        g = xx - yy
        t = X + Y
        e = h - t * t % P
        f = 2 * (Z * Z % P) + g
        X, Y, Z, T = e * f % P, g * h % P, f * g % P, e * h % P
        j = ((s >> i) & 1) | (((k >> i) & 1) << 1)
        if j:
            X, Y, Z, T = _add(X, Y, Z, T, table[j])
        i -= 1
    return X, Y, Z


def _cached(X, Y, Z, T):
    # an extended point in the form additions take it
    P = _P
    return (Y + X) % P, (Y - X) % P, _D2 * T % P, Z


def _add(X, Y, Z, T, q):
    # add-2008-hwcd-3 (a = -1): extended + cached -> extended, 8 products (7 when q has Z = 1)
    P = _P
    ypx, ymx, t2d, z2 = q
    a = (Y - X) * ymx % P
    b = (Y + X) * ypx % P
    c = T * t2d % P
    d = Z * z2 % P if z2 != 1 else Z
    d += d
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return e * f % P, g * h % P, f * g % P, e * h % P
