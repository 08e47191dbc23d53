"""Reading a command from the fleet (`cmd/<fleet>/<device>/<type>`): header checks only.

Loaded for each command by agent/commands.py and dropped afterwards (agent/transient.py), with the CBOR
decoder it uses.
"""

from protocols.cbor_lite import loads

_MAX_PAYLOAD = 1024  # protocols/limits.py MAX_PAYLOAD, MAX_DEPTH (SPEC.md "Limits")
_MAX_DEPTH = 4


def decode(topic, payload):
    """(kind, cid, argument) of a command; (None, None, None) when it is malformed (nothing to ack).

    Only the header is checked here (SPEC.md "Common": key 0 protocol version >= 1, key 1 cid); a
    config document is checked entry by entry by agent/config_check.py, which refuses what is wrong
    with reasons in the ack, so the node needs none of the fleet's message classes.
    """
    kind = bytes(topic).rsplit(b"/", 1)[-1].decode()
    if len(payload) > _MAX_PAYLOAD:
        return None, None, None
    try:
        obj = loads(payload, max_depth=_MAX_DEPTH)
    except ValueError:  # malformed, or CBOR the fleet never sends
        return None, None, None
    if not isinstance(obj, dict):
        return None, None, None
    version, cid = obj.get(0), obj.get(1)
    if not _is_uint(version) or version < 1 or not _is_uint(cid) or cid > 0xFFFFFFFF:
        return None, None, None
    if kind == "config":
        return kind, cid, obj
    echo = obj.get(2)
    if kind == "ping" and echo is not None and not (_is_uint(echo) and echo <= 0xFFFFFFFFFFFFFFFF):
        return None, None, None
    return kind, cid, echo


def _is_uint(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
