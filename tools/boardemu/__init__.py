"""boardemu: emulated MicroPython boards for hardware-in-the-loop tests, training and demos.

One board = one host process (`tools.boardemu.host`) that runs the real MicroPython VM (the unix port)
behind a pty serial port, with a littlefs2 flash image, resets, power cuts and emulated sensor chips
(`tools.boardemu.hardware`). Drive it with the `boardemu` command or `tools.boardemu.api.EmulatedBoard`.
"""


class BoardEmuError(Exception):
    """A user-facing boardemu error: the message says what is wrong and what to do."""
