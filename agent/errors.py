"""The agent's exceptions (house rule 6: one base per package): AgentError, and SensorFault for the chips.

SensorFault is a sensor chip that is missing, silent or answering garbage. Drivers convert bus errors
(OSError from I2C, a UART that stays silent, an HX711 whose DOUT never goes low) into this one error with
a short code, so the kind sensor and the agent's health report deal with one type. `transient` tells the
caller whether retrying on the next poll is sensible (a corrupted read) or the chip needs attention
(missing, wrong identity). It lives here rather than in a module of its own: each module costs heap.
"""


class AgentError(Exception):
    """Base of every error the agent raises."""


class SensorFault(AgentError):
    """A sensor chip fault; `code` is short and stable (e.g. "lis3dh_missing"), for health reports."""

    def __init__(self, code, detail="", transient=False):
        super().__init__(code if not detail else code + ": " + detail)
        self.code = code
        self.detail = detail
        self.transient = transient
