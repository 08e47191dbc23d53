"""The simple commands: ping, reboot, rebirth (SPEC.md "Commands"). Each is acked with its cid."""

from protocols import fields
from protocols.message import Command


class Ping(Command):
    """Liveness probe; the device acks with `result` = `echo` so the fleet measures the round trip."""

    KIND = "ping"

    def __init__(self, cid, echo=None) -> None:
        super().__init__(cid)
        self.echo = None if echo is None else fields.uint(echo, "echo", 0xFFFFFFFFFFFFFFFF)

    def to_obj(self) -> dict:
        """Key 2 echo (optional, opaque to the device: the fleet puts its send time in ms there)."""
        out = self.header()
        if self.echo is not None:
            out[2] = self.echo
        return out

    @classmethod
    def from_obj(cls, obj) -> "Ping":
        """Validate a decoded ping map."""
        obj, version, cid = cls.read_header(obj, "ping")
        return cls(cid, obj.get(2))


class Reboot(Command):
    """Ask the device to restart (it acks first, then reboots). The header only (`Command.to_obj`, `Command.from_obj`)."""

    KIND = "reboot"


class Rebirth(Command):
    """Ask the device to publish its birth and current values again. The header only (`Command.to_obj`, `Command.from_obj`)."""

    KIND = "rebirth"
