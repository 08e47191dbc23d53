"""Alarm events: raised or cleared, sent once per transition (SPEC.md "Event")."""

from protocols import fields
from protocols.message import UpMessage

CLEARED = 0
RAISED = 1
WARNING = 1
ALARM = 2


class Event(UpMessage):
    """Alarm `alarm` went to `state` (RAISED/CLEARED) at `level`; `since` is when the condition began.

    `since` follows the SenML time rule: >= 2**28 is seconds since the epoch, below that it is relative to
    the moment the fleet receives the message (usually negative: seconds ago); the fleet resolves it with
    `protocols.read_up.began`.
    """

    KIND = "event"

    def __init__(self, boot, seq, alarm, state, level, value, threshold, since) -> None:
        super().__init__(boot, seq)
        self.alarm = fields.text(alarm, "alarm", 32)
        self.state = fields.choice(state, "state", (CLEARED, RAISED))
        self.level = fields.choice(level, "level", (WARNING, ALARM))
        self.value = fields.number(value, "value")
        self.threshold = fields.number(threshold, "threshold")
        self.since = fields.number(since, "since")

    def to_obj(self) -> dict:
        """Keys 3 alarm, 4 state, 5 level, 6 value, 7 threshold, 8 since."""
        out = self.header()
        out.update({3: self.alarm, 4: self.state, 5: self.level, 6: self.value, 7: self.threshold,
                    8: self.since})
        return out
