"""Who this node is: the identity file provisioning writes to the board's flash.

`/device.json` holds the fleet and device ids, the sensor kind, the broker, this device's own MQTT
credential and the installation calibration. It is written by `fleet provision` (atomically) and only
read here; a node without it has nothing to report to and says so on its console. Read once at start-up
through agent.transient: `Identity` has no methods, so this module's code is dropped after the read.
"""

import json

from agent.errors import AgentError

PATH = "/device.json"
KINDS = ("manhole-tilt", "water-level", "wind-load")


class Identity:
    """The parsed identity file: fleet, device, kind, host, port, tls, user, password, calibration,
    client_id, firmware, and the link's reconnect policy (backoff, stable_s: agent/link.py). With tls:
    `ca`, the certificates (DER) the broker's must chain to, and `server_name`, the name it must carry.
    Plain attributes only, so it keeps nothing of this module alive."""

    fleet = device = kind = host = client_id = firmware = server_name = ""
    port = 1883
    tls = False
    ca = None
    backoff = (1, 60)  # s: the first pause's ceiling and the cap (issue 4: a minute)
    stable_s = 30  # s: a session that lived this long starts the backoff over
    user = password = calibration = None


def parse(doc):
    """An Identity from the decoded file; raises AgentError naming the first thing wrong with it."""
    if not isinstance(doc, dict):
        raise AgentError("identity: not a JSON object")
    ident = Identity()
    ident.fleet = _text(doc, "fleet")
    ident.device = _text(doc, "id")
    ident.kind = _text(doc, "kind")
    if ident.kind not in KINDS:
        raise AgentError("identity: unknown kind %r" % ident.kind)
    broker = doc.get("broker")
    if not isinstance(broker, dict):
        raise AgentError("identity: no broker")
    ident.host = _text(broker, "host")
    ident.port = broker.get("port", 1883)
    if not isinstance(ident.port, int) or not 0 < ident.port < 65536:
        raise AgentError("identity: bad broker port")
    ident.tls = bool(broker.get("tls", False))
    if ident.tls:
        # TLS only with the broker's certificate checked: without a CA any server could pose as it.
        ident.ca = _certificates(broker.get("ca"))
        ident.server_name = broker.get("server_name", ident.host)
        if not isinstance(ident.server_name, str) or not ident.server_name:
            raise AgentError("identity: broker server_name must be text")
    # The reconnect policy, for a site that wants it different (the defaults suit a city's fleet).
    backoff = broker.get("backoff_s", ident.backoff)
    if not (isinstance(backoff, (list, tuple)) and len(backoff) == 2 and _seconds(backoff[0]) > 0
            and _seconds(backoff[1]) >= backoff[0]):
        raise AgentError("identity: broker backoff_s must be [first, cap] seconds, 0 < first <= cap")
    ident.backoff = (backoff[0], backoff[1])
    ident.stable_s = _seconds(broker.get("stable_s", ident.stable_s))
    if ident.stable_s < 0:
        raise AgentError("identity: broker stable_s must be >= 0")
    ident.user = doc.get("user")
    ident.password = doc.get("password")
    calibration = doc.get("calibration", {})
    ident.calibration = calibration if isinstance(calibration, dict) else {}
    # MQTT client id: fleet and device, so two fleets on one broker never collide.
    ident.client_id = ident.fleet + "-" + ident.device
    ident.firmware = firmware_version()
    return ident


def _text(doc, key):
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise AgentError("identity: %r missing or not text" % key)
    return value


def _seconds(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AgentError("identity: broker backoff_s and stable_s are numbers of seconds")
    return value


def _certificates(pem):
    # The PEM text of one or more CA certificates, as DER: this mbedtls build parses no PEM.
    from binascii import a2b_base64

    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise AgentError("identity: broker tls needs ca, the PEM text of the CA certificate")
    ders = []
    for block in pem.split("-----BEGIN CERTIFICATE-----")[1:]:
        body = block.split("-----END CERTIFICATE-----")
        try:
            der = a2b_base64("".join(body[0].split())) if len(body) > 1 else b""
        except ValueError:  # binascii.Error is a ValueError
            der = b""
        if not der:
            raise AgentError("identity: broker ca is not valid PEM")
        ders.append(der)
    return ders


def load(path=PATH):
    """Read and check the identity file; AgentError when it is missing or malformed."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError:
        raise AgentError("identity: %s not found (provision this board with `fleet provision`)" % path)
    except ValueError:
        raise AgentError("identity: %s is not valid JSON" % path)
    return parse(doc)


def firmware_version():
    """The version of the app bundle running, from the manifest beside it ("0" when unknown).

    The app lives in a slot (/app/a or /app/b, see firmware/main.py) that main.py puts first on
    sys.path; a bundle copied to the root has its manifest at /manifest.json. Only the manifest's tail
    is read: parsing its file list (about 8 KB of JSON) would take more heap than the agent can spare,
    and firmware/build.py writes the keys sorted, so "version" is the last one.
    """
    import sys

    for folder in sys.path:
        if folder.startswith("/") or not folder:
            try:
                with open((folder or ".") + "/manifest.json") as f:
                    size = f.seek(0, 2)
                    f.seek(max(0, size - 160))
                    tail = f.read()
            except OSError:
                continue
            at = tail.rfind('"version"')
            if at >= 0:
                try:
                    return str(json.loads(tail[at + 10:].strip().rstrip("}").strip()))[:32]
                except ValueError:
                    pass
    return "0"
