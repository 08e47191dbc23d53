"""Checks of a config document (SPEC.md "Config"; the keys are described in agent/config.py).

Apart from agent/config.py because they run only when a document arrives or at boot: AgentConfig
imports this module for the check and unloads it afterwards, so its code is not resident on the heap.
"""

try:
    from micropython import const
except ImportError:  # CPython (tests, tools): const() is the value itself
    from copy import copy as const  # type: ignore[assignment, no-redef]

# const(): no module globals for these (this module is loaded at the peak of a config change)
_MAX_ALARMS = const(8)  # per document; the defaults bring at most 3 more
_MAX_ITEMS = const(32)  # SPEC.md "Limits": map entries
_MAX_NAME = const(32)
_NAME_CHARS = const("abcdefghijklmnopqrstuvwxyz0123456789_-")
_TABLES = const((3, 4, 6, 7))

#: measurement -> (lowest, highest) plausible value, for config checks
RANGES = {
    "tilt": (0, 180), "accel": (0, 40), "level": (-1000, 10000), "rise": (-1000, 1000),
    "wind": (0, 100), "gust": (0, 100), "wind10": (0, 100), "load": (-50000, 50000),
}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    if isinstance(v, float):
        return v == v and v not in (float("inf"), float("-inf"))
    return _is_int(v)


def _name_ok(name):
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        return False
    for ch in name:
        if ch not in _NAME_CHARS:
            return False
    return True


def _alarm_reason(entry, measures):
    """The reason code an alarm entry is refused for, or None."""
    if not isinstance(entry, dict):
        return "bad_alarm"
    measure = entry.get(0)
    if measure not in measures:
        return "unknown_measure"
    lo, hi = RANGES[measure]
    up, down = entry.get(1), entry.get(2)
    if not (_is_num(up) and _is_num(down)):
        return "bad_threshold"
    if not (lo <= up <= hi and lo <= down <= hi) or up == down:
        return "bad_threshold"
    for key in (3, 5):
        value = entry.get(key, 0)
        if not _is_int(value) or not 0 <= value <= 86400:
            return "bad_confirm"
    for key in (6, 7):
        value = entry.get(key, 1)
        if not _is_int(value) or not 1 <= value <= 255:
            return "bad_confirm"
    if entry.get(4) not in (1, 2) or isinstance(entry.get(4), bool):
        return "bad_level"
    return None


def _value_reason(key, value, measure):
    """The reason code a table value (key 4, 6 or 7) is refused for, or None."""
    if key == 4:
        return None if _is_int(value) and 1 <= value <= 86400 else "bad_period"
    if key == 6:
        return None if _is_num(value) and value >= 0 else "bad_deadband"
    if isinstance(value, (list, tuple)) and len(value) == 2 and _is_num(value[0]) and _is_num(value[1]) \
            and value[0] != 0:
        return None
    return "bad_calibration"


def validate(doc, measures):
    """(clean, refused, reasons): the valid part of `doc`, the (key, name) entries refused, the reasons.

    `measures`: the measurements of the node's kind (agent/defaults.py MEASURES).
    """
    clean: dict = {}
    refused: list = []
    reasons: list = []
    version = doc.get(2) if isinstance(doc, dict) else None
    if not _is_int(version) or not 1 <= version <= 0xFFFFFFFF:
        return None, refused, ["bad_version"]
    clean[2] = version
    for key in _TABLES:
        table = doc.get(key)
        if table is None:
            continue
        if not isinstance(table, dict) or len(table) > (_MAX_ALARMS if key == 3 else _MAX_ITEMS):
            reasons.append("bad_table:%d" % key)
            refused.append((key, None))
            continue
        out = clean[key] = {}
        for name, value in table.items():
            if key == 3:
                bad = "bad_name" if not _name_ok(name) else _alarm_reason(value, measures)
            else:
                bad = "unknown_measure" if name not in measures else _value_reason(key, value, name)
            if bad:
                reasons.append("%s:%s" % (bad, name if isinstance(name, str) else "?"))
                refused.append((key, name))
            else:
                out[name] = dict(value) if key == 3 else (list(value) if key == 7 else value)
    heartbeat = doc.get(5)
    if heartbeat is not None:
        if _is_int(heartbeat) and 1 <= heartbeat <= 86400:
            clean[5] = heartbeat
        else:
            reasons.append("bad_heartbeat")
            refused.append((5, None))
    return clean, refused, reasons[:32]  # an ack carries at most 32 reasons (SPEC.md "Limits")
