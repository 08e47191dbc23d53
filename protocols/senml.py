"""SenML (RFC 8428) in its CBOR form: labels, units, the catalogue, the name rule.

A pack is a list of records; a record is a dict keyed by the integer labels of RFC 8428 §6 Table 4. The
device-side builder that makes packs compact lives in `protocols.senml_pack` (self-contained, with the
catalogue: it is the only SenML module the node keeps loaded); the fleet's checks of a received pack and
the resolver (RFC 8428 §4.6) live in `protocols.senml_resolve`, which the node never imports (it only
builds packs, so they cost it no heap). The node loads this module only with a config command.
"""

from protocols import senml_pack
from protocols.errors import ProtocolError

# RFC 8428 §6, Table 4 (the table is final: extensions use text labels, §6).
BVER = -1
BN = -2
BT = -3
BU = -4
BV = -5
BS = -6
N = 0
U = 1
V = 2
VS = 3
VB = 4
S = 5
T = 6
UT = 7
VD = 8

#: Unit names this fleet uses. Primary units are from the SenML units registry (RFC 8428 §12.1; "deg" and
#: "B" were added by RFC 8798 §2); "mm", "cm", "mV", "ms", "km/h", "hPa" are secondary units of RFC 8798
#: §3, which only a recipient known to understand them may get; the fleet does
#: (`senml_resolve.to_primary`, which also holds the factors).
UNITS = ("m", "m/s2", "mm", "cm", "m/s", "km/h", "deg", "rad", "N", "Pa", "hPa", "V", "mV", "A", "%EL", "s", "ms",
         "Cel", "%RH", "B", "count", "/", "1/s", "Hz")

#: The measurement catalogue (SPEC.md "Measurements"): name -> unit, defined beside the node's pack builder.
MEASUREMENTS = senml_pack.MEASUREMENTS

_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-:./_"


def check_name(name) -> str:
    """Return `name` if it is a valid resolved SenML name (RFC 8428 §4.5.1 character rules)."""
    if not name or name[0] in "-:./_":
        raise ProtocolError("senml_name", "name %r must start with A-Z, a-z or 0-9" % name)
    for char in name:
        if char not in _NAME_CHARS:
            raise ProtocolError("senml_name", "name %r: character %r not allowed" % (name, char))
    return name
