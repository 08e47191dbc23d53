"""Loading, checking and applying config documents for AgentConfig (agent/config.py), run rarely.

Imported for each call through agent.transient and dropped afterwards, so neither this code nor the
defaults table nor the checks (agent/config_check.py) stay in the heap between config changes. Checking,
building the defaults (agent/config.py) and merging are separate calls, so no two of the three are
loaded at the same time: the peak of a config change is what limits the agent in a 110 KB heap.
"""

import json

from agent import flashio

_TABLES = (3, 4, 6, 7)


def stored(config):
    """(clean, refused, reasons) of the document stored on flash; None when there is none."""
    data = flashio.read(config.path)
    if data is None:
        return None, [], (["no_config"] if flashio.exists(config.path) else [])
    from agent import config_check

    try:
        return config_check.validate(from_json(data.decode()), config.measures)
    except (ValueError, TypeError, AttributeError):
        return None, [], ["bad_stored_config"]


def merge(base, doc):
    """A new document: `base` overlaid entry by entry by `doc` (tables merged by name)."""
    out = {}
    for key, value in base.items():
        out[key] = dict(value) if isinstance(value, dict) else value
    for key, value in doc.items():
        if key in _TABLES:
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


def take(config, clean, base):
    """Make `clean` (a checked document) the one in force: merged over `base`, the kind's defaults."""
    config.applied = clean
    config._doc = merge(base, clean)


def commit(config, clean, refused, base):
    """Apply the checked entries `clean` over what is in force (a refused entry keeps its old value) and
    store the document; `base`: the kind's defaults."""
    old = config.applied
    for key, name in refused:  # what was in force for a refused entry stays
        if name is None:
            if key in old:
                clean[key] = old[key]
        elif name in old.get(key, {}):
            clean.setdefault(key, {})[name] = old[key][name]
    take(config, clean, base)
    flashio.write(config.path, _to_json(clean).encode())


def from_json(text):
    """The document as stored by commit() (JSON, integer keys as strings)."""
    out = {}
    for key, value in json.loads(text).items():
        key = int(key)
        if key == 3:
            value = {name: {int(k): v for k, v in entry.items()} for name, entry in value.items()}
        out[key] = value
    return out
