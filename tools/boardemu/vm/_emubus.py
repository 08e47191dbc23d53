# machine.I2C, machine.SoftI2C and machine.UART of the board emulator (MicroPython code).
#
# Same signatures and errors as the ESP32 port for what sensor drivers use. Each transfer is one
# request to the hub (tools/boardemu/hardware/busops.py has the frame layouts); an address that does
# not acknowledge raises OSError(ENODEV) as on the board. Transfers are limited to 250 bytes.

import struct

from _emulink import LINK
from micropython import const

_MAX = const(250)
# ESP32 port defaults: I2C0 scl=18 sda=19, I2C1 scl=25 sda=26; UART0 tx=1 rx=3, 1 tx=10 rx=9, 2 tx=17 rx=16.
_I2C_PINS = ((18, 19), (25, 26))
_UART_PINS = ((1, 3), (10, 9), (17, 16))


def _pin_no(pin):
    return pin if isinstance(pin, int) else pin.id()


def _check_len(n):
    if n > _MAX:
        raise ValueError("emulator: I2C/UART transfers are limited to 250 bytes")


def _copy_out(buf, n):
    resp = LINK.resp
    for i in range(n):
        buf[i] = resp[1 + i]


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % id)
        self._bus = id
        self.init(scl=scl, sda=sda, freq=freq, timeout=timeout)

    def init(self, *, scl=None, sda=None, freq=400000, timeout=50000):
        dscl, dsda = _I2C_PINS[self._bus] if self._bus < 2 else (None, None)
        scl = dscl if scl is None else _pin_no(scl)
        sda = dsda if sda is None else _pin_no(sda)
        if scl is None or sda is None:
            raise TypeError("SoftI2C needs scl and sda")
        struct.pack_into(">BBBI", LINK.req, 2, self._bus, scl, sda, freq)
        LINK.send(0x63, 7)  # c

    def deinit(self):
        pass

    def scan(self):
        LINK.req[2] = self._bus
        n = LINK.call(0x73, 1)  # s
        return [LINK.resp[1 + i] for i in range(n)]

    def writeto(self, addr, buf, stop=True):
        _check_len(len(buf))
        req = LINK.req
        req[2] = self._bus
        req[3] = addr
        req[4] = 1 if stop else 0
        for i in range(len(buf)):
            req[5 + i] = buf[i]
        LINK.call(0x77, 3 + len(buf))  # w
        return LINK.resp[1]

    def writevto(self, addr, vector, stop=True):
        data = bytearray()
        for buf in vector:
            data.extend(buf)
        return self.writeto(addr, data, stop)

    def _read(self, addr, n, stop):
        _check_len(n)
        req = LINK.req
        req[2] = self._bus
        req[3] = addr
        req[4] = n
        req[5] = 1 if stop else 0
        LINK.call(0x72, 4)  # r

    def readfrom(self, addr, nbytes, stop=True):
        self._read(addr, nbytes, stop)
        return bytes(LINK.resp[1:1 + nbytes])

    def readfrom_into(self, addr, buf, stop=True):
        self._read(addr, len(buf), stop)
        _copy_out(buf, len(buf))

    def _mem_read(self, addr, memaddr, n, addrsize):
        if addrsize != 8:
            raise ValueError("emulator: only 8-bit register addresses")
        _check_len(n)
        req = LINK.req
        req[2] = self._bus
        req[3] = addr
        req[4] = memaddr
        req[5] = n
        LINK.call(0x6D, 4)  # m

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        self._mem_read(addr, memaddr, nbytes, addrsize)
        return bytes(LINK.resp[1:1 + nbytes])

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        self._mem_read(addr, memaddr, len(buf), addrsize)
        _copy_out(buf, len(buf))

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        if addrsize != 8:
            raise ValueError("emulator: only 8-bit register addresses")
        _check_len(len(buf))
        req = LINK.req
        req[2] = self._bus
        req[3] = addr
        req[4] = memaddr
        for i in range(len(buf)):
            req[5 + i] = buf[i]
        LINK.call(0x57, 3 + len(buf))  # W


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self._bus = 255
        self.init(scl=scl, sda=sda, freq=freq, timeout=timeout)


class UART:
    INV_TX = 1
    INV_RX = 2
    INV_RTS = 4
    INV_CTS = 8
    RTS = 1
    CTS = 2

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        if id not in (0, 1, 2):
            raise ValueError("UART(%s) does not exist" % id)
        self._id = id
        self._timeout = 0
        self.init(baudrate, bits, parity, stop, **kw)

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None, rxbuf=256,
             timeout=0, timeout_char=0, **kw):
        dtx, drx = _UART_PINS[self._id]
        self._tx = dtx if tx is None else _pin_no(tx)
        self._rx = drx if rx is None else _pin_no(rx)
        self._timeout = timeout
        self._baud = baudrate
        struct.pack_into(">BIBBH", LINK.req, 2, self._id, baudrate, self._rx, self._tx, rxbuf)
        LINK.send(0x56, 9)  # V

    def deinit(self):
        pass

    def any(self):
        LINK.req[2] = self._id
        LINK.call(0x61, 1)  # a
        return (LINK.resp[1] << 8) | LINK.resp[2]

    def _read(self, n):
        # One request for up to n (<= 250) bytes, waiting at most the UART's timeout.
        struct.pack_into(">BBH", LINK.req, 2, self._id, n, min(self._timeout, 0xFFFF))
        return LINK.call(0x75, 4)  # u

    def read(self, nbytes=None):
        if nbytes is None:
            nbytes = self.any()
            if not nbytes:
                return None
        out = bytearray()
        while len(out) < nbytes:
            got = self._read(min(nbytes - len(out), _MAX))
            if not got:
                break
            out.extend(LINK.resp[1:1 + got])
        return bytes(out) if out else None

    def readinto(self, buf, nbytes=None):
        n = len(buf) if nbytes is None else min(nbytes, len(buf))
        got = self._read(min(n, _MAX))
        resp = LINK.resp
        for i in range(got):
            buf[i] = resp[1 + i]
        return got or None

    def readline(self):
        out = bytearray()
        while True:
            got = self._read(1)
            if not got:
                break
            out.append(LINK.resp[1])
            if LINK.resp[1] == 10:
                break
        return bytes(out) if out else None

    def write(self, buf):
        req = LINK.req
        sent = 0
        while sent < len(buf):
            n = min(len(buf) - sent, _MAX)
            req[2] = self._id
            for i in range(n):
                req[3 + i] = buf[sent + i]
            LINK.send(0x55, 1 + n)  # U
            sent += n
        return sent

    def flush(self):
        pass

    def txdone(self):
        return True

    def sendbreak(self):
        pass
