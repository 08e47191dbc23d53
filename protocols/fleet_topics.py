"""The fleet's side of the topics (SPEC.md "Topics"): its subscription filter.

Apart from `protocols.topic` because only the fleet subscribes to many devices: the node never imports
this module, so it costs the node's heap nothing.
"""

from protocols.errors import ProtocolError
from protocols.topic import FLEET_MAX, UP, UP_TYPES, check_id


def fleet_filter(fleet: str, kind: str = "+") -> str:
    """Subscription filter the fleet uses for every device's `kind` messages (all types by default)."""
    check_id(fleet, "fleet", FLEET_MAX)
    if kind != "+" and kind not in UP_TYPES:
        raise ProtocolError("bad_type", "unknown %s type %r" % (UP, kind))
    return UP + "/" + fleet + "/+/" + kind
