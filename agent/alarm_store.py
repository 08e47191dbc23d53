"""AlarmStore: the set of active alarms on flash, so a reboot neither raises an alarm twice nor loses one.

At boot, restore() marks the stored alarms active without an event: one still past its threshold stays
quiet, one that cleared while the node was off goes through the normal clear confirmation and is cleared
exactly once. After each event the caller first puts the event in the outbox, then calls sync(): a power
cut between the two repeats the event after the reboot (the fleet sees a duplicate, never a loss).

File: the active names, one per line, sorted, in flashio's atomic CRC-checked format. It is written only
when the set changes (a few writes per alarm, never per sample).
"""

from agent import flashio


class AlarmStore:
    """Active alarm names persisted at `path`."""

    def __init__(self, path):
        self.path = path
        self._saved = None  # the names as last written or read, sorted list

    def load(self):
        """The alarm names stored as active (empty when none or unreadable)."""
        data = flashio.read(self.path)
        names = []
        if data:
            for line in data.decode().split("\n"):
                if line:
                    names.append(line)
        names.sort()
        self._saved = names
        return names

    def restore(self, alarms):
        """Mark the stored alarms of `alarms` (name -> Alarm) active; return the names restored.

        Names no longer configured are forgotten at the next sync().
        """
        restored = []
        for name in self.load():
            alarm = alarms.get(name)
            if alarm is not None:
                alarm.restore(True)
                restored.append(name)
        return restored

    def sync(self, alarms):
        """Write the active set of `alarms` (name -> Alarm) if it changed; True when written."""
        names = [name for name, alarm in alarms.items() if alarm.active]
        names.sort()
        if names == self._saved:
            return False
        flashio.write(self.path, "\n".join(names).encode())
        self._saved = names
        return True
