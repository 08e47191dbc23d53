"""The fleet's reading of device messages: a decoded value -> a validated up message (SPEC.md).

Apart from the message classes because the node builds these messages but never reads them: it does not
import this module, so the readers (and the SenML checks they use) cost its heap nothing.
"""

from protocols import fields
from protocols.ack import Ack
from protocols.errors import ProtocolError
from protocols.event import Event
from protocols.health import FIELDS, Health
from protocols.ota import OtaProgress, Pull
from protocols.senml_resolve import check_pack
from protocols.state import State
from protocols.telemetry import Telemetry


def began(message: Event, now: int):
    """Absolute time an event's condition began, given the receiver's clock `now` (RFC 8428 §4.5.3 rule)."""
    since = message.since
    return since + now if since < fields.RELATIVE_LIMIT else since


def _header(obj, name: str):
    """(map, version, boot, seq) of a decoded device message."""
    obj = fields.as_map(obj, name)
    version = fields.version(obj)
    return obj, version, fields.require(obj, 1, "boot"), fields.require(obj, 2, "seq")


def telemetry(obj) -> Telemetry:
    """Validate a decoded telemetry array, its SenML pack in full."""
    if not isinstance(obj, list) or len(obj) < 4:
        raise ProtocolError("bad_message", "telemetry must be an array [version, boot, seq, record...]")
    version = obj[0]
    if not fields.is_int(version) or version < 1:
        raise ProtocolError("bad_version", "protocol version must be an integer >= 1, not %r" % (version,))
    start = 3
    while start < len(obj) and not isinstance(obj[start], dict):
        start += 1
    message = Telemetry(obj[1], obj[2], check_pack(obj[start:]))
    message.protocol = version
    return message


def event(obj) -> Event:
    """Validate a decoded event map."""
    obj, version, boot, seq = _header(obj, "event")
    need = fields.require
    message = Event(boot, seq, need(obj, 3, "alarm"), need(obj, 4, "state"), need(obj, 5, "level"),
                    need(obj, 6, "value"), need(obj, 7, "threshold"), need(obj, 8, "since"))
    message.protocol = version
    return message


def health(obj) -> Health:
    """Validate a decoded health map."""
    obj, version, boot, seq = _header(obj, "health")
    optional = {}
    for key, attr in enumerate(FIELDS, 4):
        if key in obj:
            optional[attr] = obj[key]
    message = Health(boot, seq, fields.require(obj, 3, "uptime"), **optional)
    message.protocol = version
    return message


def state(obj) -> State:
    """Validate a decoded state map (a will's extra keys are ignored, as any unknown key)."""
    obj, version, boot, seq = _header(obj, "state")
    online = fields.require(obj, 3, "online")
    if online is True:
        message = State(boot, seq, True, fields.require(obj, 4, "firmware"), fields.require(obj, 5, "config"),
                        fields.require(obj, 6, "reset"), obj.get(7))
    else:
        message = State(boot, seq, online)
    message.protocol = version
    return message


def ack(obj) -> Ack:
    """Validate a decoded ack map."""
    obj, version, boot, seq = _header(obj, "ack")
    message = Ack(boot, seq, fields.require(obj, 3, "cid"), fields.require(obj, 4, "status"), obj.get(5),
                  obj.get(6), obj.get(7))
    message.protocol = version
    return message


def ota(obj) -> OtaProgress:
    """Validate a decoded OTA progress map."""
    obj, version, boot, seq = _header(obj, "ota")
    message = OtaProgress(boot, seq, fields.require(obj, 3, "cid"), fields.require(obj, 4, "state"),
                          obj.get(5), obj.get(6), obj.get(7))
    message.protocol = version
    return message


def pull(obj) -> Pull:
    """Validate a decoded OTA pull map."""
    obj, version, boot, seq = _header(obj, "pull")
    need = fields.require
    message = Pull(boot, seq, need(obj, 3, "cid"), need(obj, 4, "index"), need(obj, 5, "offset"), need(obj, 6, "count"))
    message.protocol = version
    return message


#: topic type -> reader
READERS = {"telemetry": telemetry, "event": event, "health": health, "state": state, "ack": ack, "ota": ota,
           "pull": pull}
