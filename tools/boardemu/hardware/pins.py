"""The board's GPIOs as the VM sees them: modes, pulls, output latches and edge interrupts.

Inputs are driven by chip models (`attach_input`: a function giving the level at time t); outputs
feed chip models (`attach_output`: called with the level and the VM's time stamp in us). A model that
changes an input by itself (LIS3DH INT1, the anemometer) calls `input_edge`; when the VM armed an IRQ
for that edge, `emit(pin, flags)` queues the event for the VM. Flag values are the ESP32 port's
Pin.IRQ_RISING = 1 and Pin.IRQ_FALLING = 2.
"""

from __future__ import annotations

IRQ_RISING = 1
IRQ_FALLING = 2
IN, OUT, OPEN_DRAIN = 1, 3, 7  # ESP32 port's Pin.IN / Pin.OUT / Pin.OPEN_DRAIN
PULL_UP, PULL_DOWN = 1, 2
VALID = set(range(0, 40)) - {20, 24, 28, 29, 30, 31}  # ESP32 GPIO numbers
INPUT_ONLY = {34, 35, 36, 37, 38, 39}


class PinError(ValueError):
    """The VM asked for a pin the ESP32 does not have or cannot use that way."""


class Pins:
    """Pin states of one board; not thread-safe on its own (the Hardware lock guards it)."""

    def __init__(self, emit):
        self._emit = emit
        self._inputs = {}
        self._outputs = {}
        self.reset()

    def reset(self) -> None:
        """All pins back to inputs without pulls or IRQs (a VM restart)."""
        self.mode = {}
        self.pull = {}
        self.latch = {}
        self.trigger = {}
        self.events = 0

    def attach_input(self, pin: int, level) -> None:
        self._inputs[pin] = level

    def attach_output(self, pin: int, sink) -> None:
        self._outputs[pin] = sink

    def check(self, pin: int, output: bool = False) -> None:
        if pin not in VALID:
            raise PinError("GPIO%d does not exist on an ESP32" % pin)
        if output and pin in INPUT_ONLY:
            raise PinError("GPIO%d is input-only" % pin)

    def configure(self, pin: int, mode: int, pull: int) -> None:
        """Pin.init(mode, pull)."""
        self.check(pin, mode in (OUT, OPEN_DRAIN))
        self.mode[pin] = mode
        self.pull[pin] = pull

    def read(self, pin: int, t: float) -> int:
        """Pin.value(): an output reads back its latch, an input its driver, else its pull."""
        self.check(pin)
        if self.mode.get(pin) == OUT:
            return self.latch.get(pin, 0)
        if pin in self._inputs:
            return self._inputs[pin](t)
        return 1 if self.pull.get(pin) == PULL_UP else 0

    def write(self, pin: int, level: int, t_us: int) -> None:
        """Pin.value(level) at VM time t_us."""
        self.check(pin, True)
        self.latch[pin] = level
        if pin in self._outputs and self.mode.get(pin) in (OUT, OPEN_DRAIN):
            self._outputs[pin](level, t_us)

    def irq(self, pin: int, trigger: int) -> None:
        """Pin.irq(trigger=...); 0 disarms."""
        self.check(pin)
        if trigger:
            self.trigger[pin] = trigger
        else:
            self.trigger.pop(pin, None)

    def armed(self, pin: int) -> bool:
        return pin in self.trigger

    def input_edge(self, pin: int, level: int) -> None:
        """A model moved input `pin` to `level`: queue the IRQ when armed for that edge."""
        flag = IRQ_RISING if level else IRQ_FALLING
        if self.trigger.get(pin, 0) & flag:
            self.events += 1
            self._emit(pin, flag)
