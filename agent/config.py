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
Loading, checking and applying a document run rarely (boot, a config command), so that code lives in
agent/config_apply.py and agent/config_check.py, loaded for the call and dropped (agent/transient.py);
so does reading the effective document (agent/reconfig.py), which only building the alarms, filters and
schedule does. What stays resident is the document in force and its version.
"""

from agent import transient

_APPLY = "agent.config_apply"  # loading, merging and storing a document, loaded per call


def _defaults(kind):
    # A call of its own: the defaults' code is never loaded together with the merge's or the checks'.
    from agent import defaults

    return defaults.config_for(kind), defaults.MEASURES[kind]


class AgentConfig:
    """The config of a `kind` node, stored at `path`; agent/reconfig.py `effective()` gives the effective
    document (defaults + applied) and the values in it.

    The agent reads the effective document only while it builds its alarms, filters and schedule (at
    start-up and after a config change), so it lets it go then (`_doc = None`: agent/startup.py,
    agent/reconfig.py) rather than keep a kilobyte of dicts; `effective()` merges it again when asked.
    """

    def __init__(self, kind, path):
        self.kind = kind
        self.path = path
        self.applied = {2: 0}  # the last accepted document (its valid part): version 0 = defaults only
        self._doc, self.measures = transient.call(_defaults, kind)

    @property
    def version(self):
        """Config version in force (0: firmware defaults)."""
        return self.applied[2]

    def load(self):
        """Read the stored document at boot; return reasons if it was unreadable or partly invalid."""
        clean, _, reasons = transient.run(_APPLY, "stored", self)
        if clean is not None:  # entries this firmware refuses now keep their defaults
            transient.run(_APPLY, "take", self, clean, transient.call(_defaults, self.kind)[0])
        return reasons

    def apply(self, doc, whole=False):
        """Validate and apply a desired-state document, persist it; return the reasons for what was refused.

        The same version again is a no-op (a retained config redelivered on reconnect).
        """
        if isinstance(doc, dict) and doc.get(2) == self.version and self.version:
            return []
        # The checks alone: the peak of a config change is what the heap must hold.
        clean, refused, reasons = transient.run("agent.config_check", "validate", doc, self.measures)
        if clean is None or (whole and reasons):
            return reasons
        transient.run(_APPLY, "commit", self, clean, refused, transient.call(_defaults, self.kind)[0])
        return reasons
