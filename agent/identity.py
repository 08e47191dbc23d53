"""Who this node is: the identity file provisioning writes to the board's flash.

`/device.json` holds the fleet and device ids, the sensor kind, the broker, this device's own MQTT
credential and the installation calibration. It is written by `fleet provision` (atomically) and only
read here; a node without it has nothing to report to and says so on its console.
"""

import json

from agent.errors import AgentError

PATH = "/device.json"
KINDS = ("manhole-tilt", "water-level", "wind-load")


class Identity:
    """The parsed identity file; raises AgentError naming the first thing wrong with it."""

    def __init__(self, doc):
        if not isinstance(doc, dict):
            raise AgentError("identity: not a JSON object")
        self.fleet = _text(doc, "fleet")
        self.device = _text(doc, "id")
        self.kind = _text(doc, "kind")
        if self.kind not in KINDS:
            raise AgentError("identity: unknown kind %r" % self.kind)
        broker = doc.get("broker")
        if not isinstance(broker, dict):
            raise AgentError("identity: no broker")
        self.host = _text(broker, "host")
        self.port = broker.get("port", 1883)
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise AgentError("identity: bad broker port")
        self.tls = bool(broker.get("tls", False))
        self.user = doc.get("user")
        self.password = doc.get("password")
        calibration = doc.get("calibration", {})
        self.calibration = calibration if isinstance(calibration, dict) else {}
        # MQTT client id: fleet and device, so two fleets on one broker never collide.
        self.client_id = self.fleet + "-" + self.device


def _text(doc, key):
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise AgentError("identity: %r missing or not text" % key)
    return value


def load(path=PATH):
    """Read and check the identity file; AgentError when it is missing or malformed."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError:
        raise AgentError("identity: %s not found (provision this board with `fleet provision`)" % path)
    except ValueError:
        raise AgentError("identity: %s is not valid JSON" % path)
    return Identity(doc)


def firmware_version(path="/manifest.json"):
    """The bundle version flashed on this board, from its manifest ("0" when unknown)."""
    try:
        with open(path) as f:
            return str(json.load(f).get("version", "0"))[:32]
    except (OSError, ValueError, AttributeError):
        return "0"
