"""What a simulated device has in flight: the topic kinds it publishes to and where an item came from.

An item is (origin, boot, seq, kind, payload, readings); `kind` indexes TOPIC_KINDS (`dt/<fleet>/<id>/<kind>`).
"""

TELEMETRY, EVENT, HEALTH, STATE, ACK, BOGUS, OTA, PULL = range(8)
TOPIC_KINDS = ("telemetry", "event", "health", "state", "ack", "bogus", "ota", "pull")
# Origins: the outbox; the agent at once (kept in the outbox when the broker does not take it; a birth is
# simply sent again on the next session); garbage; a resend of an acknowledged message; update mode (live
# only: it has no outbox).
OUTBOX, LIVE, GARBAGE, DUP, MODE = range(5)
