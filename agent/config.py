"""AgentConfig: the config document in force, validated, merged over the kind's defaults, kept on flash.

Keys are those of the wire message (SPEC.md "Config", protocols/config.py), so the decoded map (or
`Config.to_obj()`) is applied as it is:

    2 version (uint32 >= 1)   3 alarms: name -> {0 measure, 1 raise, 2 clear, 3 confirm s, 4 level}
    4 sample period s (1..86400): measure ->       5 heartbeat s (1..86400)
    6 deadband (>= 0): measure ->                  7 calibration [scale != 0, offset]: measure ->

Alarm entries may also carry agent keys 5 clear confirm s, 6 confirm samples (1..255), 7 clear samples
(agent/alarm.py). Keys 0 and 1 (protocol version, cid) and keys unknown to this firmware are ignored, as
SPEC.md "Versioning" asks of readers.

Desired state: the effective config is the kind's defaults (agent/defaults.py) overlaid, entry by entry,
by the document; a measurement missing from a table keeps its default. apply() checks every entry; a bad
entry is refused with a short reason ("<code>:<where>", e.g. "bad_threshold:flood") and the entry in
force before stays. With whole=True any reason refuses the whole document (SPEC.md: "the old config
stays"); the caller picks the policy and acks status 1 with the reasons when there are any.

On flash: the applied document as JSON (integer keys written as strings), via flashio (atomic, CRC).
"""

import json

from agent import defaults, flashio

TABLES = (3, 4, 6, 7)


def _unload_check():
    # The checks run at boot and when a config arrives; drop their code afterwards (heap, issue 4).
    import sys

    import agent

    sys.modules.pop("agent.config_check", None)
    if "config_check" in agent.__dict__:
        delattr(agent, "config_check")


def validate(doc, kind):
    """(clean, refused, reasons): the valid part of `doc`, the (key, name) entries refused, the reasons."""
    from agent import config_check

    try:
        return config_check.validate(doc, kind)
    finally:
        _unload_check()


def merge(base, doc):
    """A new document: `base` overlaid entry by entry by `doc` (tables merged by name)."""
    out = {}
    for key, value in base.items():
        out[key] = dict(value) if isinstance(value, dict) else value
    for key, value in doc.items():
        if key in TABLES:
            table = out.setdefault(key, {})
            table.update(value)
        else:
            out[key] = value
    return out


def _to_json(doc):
    out = {}
    for key, value in doc.items():
        if key == 3:
            value = {name: {str(k): v for k, v in entry.items()} for name, entry in value.items()}
        out[str(key)] = value
    return json.dumps(out)


class AgentConfig:
    """The config of a `kind` node, stored at `path`; `doc` is the effective document (defaults + applied)."""

    def __init__(self, kind, path):
        self.kind = kind
        self.path = path
        self.applied = {2: 0}  # the last accepted document (its valid part): version 0 = defaults only
        self.doc = defaults.config_for(kind)

    @property
    def version(self):
        """Config version in force (0: firmware defaults)."""
        return self.applied[2]

    def load(self):
        """Read the stored document at boot; return reasons if it was unreadable or partly invalid."""
        data = flashio.read(self.path)
        if data is None:
            return ["no_config"] if flashio.exists(self.path) else []
        from agent import config_check

        try:
            doc = config_check.from_json(data.decode())
            clean, _, reasons = config_check.validate(doc, self.kind)
        except (ValueError, TypeError, AttributeError):
            return ["bad_stored_config"]
        finally:
            _unload_check()
        if clean is not None:  # entries this firmware refuses now keep their defaults
            self.applied = clean
            self.doc = merge(defaults.config_for(self.kind), clean)
        return reasons

    def apply(self, doc, whole=False):
        """Validate and apply a desired-state document, persist it; return the reasons for what was refused.

        The same version again is a no-op (a retained config redelivered on reconnect).
        """
        if isinstance(doc, dict) and doc.get(2) == self.version and self.version:
            return []
        clean, refused, reasons = validate(doc, self.kind)
        if clean is None or (whole and reasons):
            return reasons
        old = self.applied
        for key, name in refused:  # what was in force for a refused entry stays
            if name is None:
                if key in old:
                    clean[key] = old[key]
            elif name in old.get(key, {}):
                clean.setdefault(key, {})[name] = old[key][name]
        self.applied = clean
        self.doc = merge(defaults.config_for(self.kind), clean)
        self.save()
        return reasons

    def save(self):
        """Write the applied document to flash (atomic)."""
        flashio.write(self.path, _to_json(self.applied).encode())

    def alarms(self):
        """New Alarm objects for the alarms in force: name -> Alarm."""
        from agent.alarm import from_entry

        return {name: from_entry(name, entry) for name, entry in self.doc[3].items()}

    def sample_s(self, measure):
        """Slow (quiet-day) sample period of `measure`, seconds."""
        return self.doc[4].get(measure)

    def heartbeat(self):
        """Longest time between reports (SenML ut), seconds."""
        return self.doc[5]

    def deadband(self, measure):
        """Deadband of `measure` (0 when none)."""
        return self.doc[6].get(measure, 0)

    def calibration(self, measure):
        """(scale, offset) of `measure`: value = raw * scale + offset."""
        cal = self.doc[7].get(measure)
        return (1, 0) if cal is None else (cal[0], cal[1])
