"""A02YYUW-style ultrasonic distance sensor on a UART (9600 8N1, DFRobot SEN0311 "UART auto" output).

The sensor sends a 4-byte frame about every 100 ms: 0xFF header, distance high byte, distance low
byte, checksum = (0xFF + high + low) & 0xFF; distance in mm. The parser is a byte state machine that
resynchronises on the 0xFF header: a frame failing its checksum is dropped (counted) and the bytes
after its header are searched again for a header, so one lost byte costs one frame, not the stream.
Readings inside the blind zone (< 30 mm: the transducer is still ringing) or past the maximum range
(4500 mm: the sensor reports its limit when no echo returns) are dropped and counted in `out_of_range`;
`frames`, `bad_checksum` and `junk` (bytes skipped looking for a header) count the rest.

Non-blocking: poll() reads only what `uart.any()` says is waiting, into a buffer allocated once.
"""

try:
    from time import ticks_diff

    from micropython import const
except ImportError:  # CPython (tests, tools): a clock that does not wrap; const() is the value itself
    from copy import copy as const  # type: ignore[assignment, no-redef]
    from operator import sub as ticks_diff  # type: ignore[assignment, no-redef]

from agent.errors import SensorFault

_HEADER = const(0xFF)
_BLIND_MM = const(30)
_MAX_MM = const(4500)
_CHUNK = const(64)


class A02YYUW:
    """Frame parser and health watch for the sensor on `uart` (a machine.UART set to 9600 8N1)."""

    def __init__(self, uart, silence_ms=3000):
        self._uart = uart
        self.silence_ms = silence_ms
        self._buf = bytearray(_CHUNK)
        self._frame = bytearray(4)
        self._n = 0  # bytes of the frame collected so far
        self.distance_mm = None  # newest valid reading
        self.frames = 0  # frames with a good checksum
        self.bad_checksum = 0
        self.out_of_range = 0
        self.junk = 0  # bytes skipped while looking for a header
        self._byte_ms = None  # when the last byte came
        self._frame_ms = None  # when the last valid frame came

    def poll(self, now_ms):
        """Parse what the UART holds; return the newest valid distance in mm from this poll, or None.

        Raises SensorFault "level_no_frames" when nothing arrived for `silence_ms`, "level_garbage"
        when bytes arrive but no frame passed its checksum for that long.
        """
        if self._byte_ms is None:
            self._byte_ms = now_ms
            self._frame_ms = now_ms
        fresh = None
        try:
            waiting = self._uart.any()
            while waiting > 0:
                n = self._uart.readinto(self._buf, min(waiting, _CHUNK)) or 0
                if n <= 0:
                    break
                self._byte_ms = now_ms
                for i in range(n):
                    if self._feed(self._buf[i]):
                        fresh = self.distance_mm
                        self._frame_ms = now_ms
                waiting -= n
        except OSError as exc:
            raise SensorFault("level_io", str(exc), True)
        silent = ticks_diff(now_ms, self._byte_ms)
        if silent > self.silence_ms:
            raise SensorFault("level_no_frames", "no bytes for %d ms" % silent)
        silent = ticks_diff(now_ms, self._frame_ms)
        if silent > self.silence_ms:
            raise SensorFault("level_garbage", "no valid frame for %d ms" % silent)
        return fresh

    def _feed(self, byte):
        """Take one byte; True when it completed a valid in-range frame."""
        frame = self._frame
        if self._n == 0:
            if byte != _HEADER:
                self.junk += 1
                return False
        frame[self._n] = byte
        self._n += 1
        if self._n < 4:
            return False
        if (frame[0] + frame[1] + frame[2]) & 0xFF != frame[3]:
            self.bad_checksum += 1
            # The header we locked on may have been a data byte: restart from the next 0xFF in the frame.
            for j in range(1, 4):
                if frame[j] == _HEADER:
                    for k in range(4 - j):
                        frame[k] = frame[j + k]
                    self._n = 4 - j
                    self.junk += j
                    return False
            self.junk += 4
            self._n = 0
            return False
        self._n = 0
        self.frames += 1
        mm = (frame[1] << 8) | frame[2]
        if mm < _BLIND_MM or mm > _MAX_MM:
            self.out_of_range += 1
            return False
        self.distance_mm = mm
        return True
