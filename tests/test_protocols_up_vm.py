"""protocols.up and up_status in the real VM, loaded as `.mpy` as on a board: the message vectors, random
messages against the bytes CPython's message classes give, what the node's hot path imports, its heap, and
up_status loaded per call and dropped afterwards.
"""

import random
import struct

import pytest

from protocols import messages
from protocols.ack import Ack
from protocols.event import Event
from protocols.health import FIELDS, Health
from protocols.senml_pack import PackBuilder
from protocols.state import State
from protocols.telemetry import Telemetry
from tests.mpvm import REPO, check_micropython

pytestmark = pytest.mark.micropython

#: What the node keeps loaded of protocols/ (its resident modules import up, senml_pack and topics);
#: nothing else may come with them or with encoding telemetry and events. The other messages' encoders
#: (protocols.up_status) are loaded per call.
HOT_PATH = ["protocols", "protocols.cbor", "protocols.errors", "protocols.senml_pack", "protocols.topics",
            "protocols.up"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The emulator bundle: protocols/ as `.mpy`, as a board loads it."""
    from firmware.build import build_bundle

    out = tmp_path_factory.mktemp("mpy") / "bundle"
    build_bundle("emulator", "test", out)
    return out


def test_message_vectors_under_micropython(compiled):
    code = """
import json
from tests.vectorform import check_up_vector, up_call
with open(PATH) as f:
    vectors = json.load(f)["vectors"]
done = 0
for vector in vectors:
    if up_call(vector):
        print(vector["name"], check_up_vector(vector))
        done += 1
print("done", done)
""".replace("PATH", repr(str(REPO / "protocols/vectors/messages.json")))
    out = check_micropython(code, heap="110k", path=[compiled, REPO]).splitlines()
    assert out[-1] == "done 16"
    assert [line for line in out[:-1] if not line.endswith(" None")] == []


def _number(rng):
    """Ints of every head size and floats that need a half, a single or a double."""
    pick = rng.randrange(5)
    if pick == 0:
        return rng.randint(-(2**64), 2**64 - 1) >> rng.randrange(64)
    if pick < 3:  # a half or a single (finite)
        value = struct.unpack(">e", struct.pack(">H", rng.getrandbits(16)))[0] if pick == 1 else \
            struct.unpack(">f", struct.pack(">I", rng.getrandbits(32)))[0]
        return value if value - value == 0 else 1.5
    if pick == 3:
        return rng.uniform(-1e6, 1e6)
    return rng.randint(-1000, 1000)


def _text(rng, longest):
    return "".join(rng.choice("az09_-\u00fc\u6c34") for _ in range(rng.randint(1, longest)))


def _cases(count=60, seed=11):
    """(function, args, expected hex) for random valid messages of every kind the node sends."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        boot, seq = rng.getrandbits(32), rng.getrandbits(32) >> rng.randrange(32)
        builder = PackBuilder(8)
        for _ in range(rng.randint(1, 8)):
            name = rng.choice(["tilt", "level", "load", "wind"])
            value = rng.randint(-5000, 5000) if name == "level" else round(rng.uniform(-90, 90), 2)
            builder.add(name, value, rng.choice([1_732_850_000, 0]) + rng.randint(-600, 0))
        pack = builder.pack(rng.choice([None, 900]))
        out.append(("telemetry", [boot, seq, pack], Telemetry(boot, seq, pack)))
        args = [boot, seq, _text(rng, 32), rng.randint(0, 1), rng.randint(1, 2), _number(rng), _number(rng),
                _number(rng)]
        out.append(("event", args, Event(*args)))
        args = [boot, seq, True, _text(rng, 32), rng.getrandbits(32), rng.randint(0, 5), rng.choice([None, "water"])]
        out.append(("state", args, State(*args)))
        values = [rng.getrandbits(32) for _ in FIELDS]
        values[4] = -rng.randint(0, 127)
        values[7] = {_text(rng, 32): rng.getrandbits(32) for _ in range(rng.randint(0, 8))}
        values[8] = _text(rng, 200)
        values = [value if rng.random() < 0.7 else None for value in values]
        args = [boot, seq, rng.getrandbits(32)] + values
        out.append(("health", args, Health(*args[:3], **dict(zip(FIELDS, values, strict=True)))))
        status = rng.randint(0, 1)
        reasons = [_text(rng, 40) for _ in range(rng.randint(status, 4))] or None
        args = [boot, seq, rng.getrandbits(32), status, reasons, rng.choice([None, rng.getrandbits(32)]),
                rng.choice([None, rng.getrandbits(64), [1, "x", 2.5]])]
        out.append(("ack", args, Ack(*args)))
    return [(kind, args, messages.encode(message).hex()) for kind, args, message in out]


def test_random_messages_match_the_classes_under_micropython(compiled, tmp_path):
    cases = _cases()
    batch = tmp_path / "cases.txt"  # one literal a line: the VM compiles each alone (a 110 KB heap)
    batch.write_text("".join(repr(list(case)) + "\n" for case in cases))  # repr() is MicroPython source too
    code = """
import binascii
from protocols import up, up_status
with open(PATH) as f:
    for line in f:
        kind, args, expected = eval(line)
        got = binascii.hexlify(getattr(up if kind in ("telemetry", "event") else up_status, kind)(*args)).decode()
        print("ok" if got == expected else "%s %r gives %s, not %s" % (kind, args, got, expected))
""".replace("PATH", repr(str(batch)))
    out = check_micropython(code, heap="110k", path=[compiled]).splitlines()
    assert [line for line in out if line != "ok"] == []
    assert len(out) == len(cases)


def test_the_hot_path_imports_only_its_own_modules(compiled):
    """Building and encoding every message the node sends loads no decoder, message class or checks; the
    hot path's own messages load not even up_status, the others nothing more."""
    code = """
import sys
def loaded():
    print(sorted(name for name in sys.modules if name.startswith("protocols")))
from protocols import senml_pack, topics, up
b = senml_pack.PackBuilder(4)
b.add("level", 412, -2)
b.add("rise", 0.01, -2, "m/s")
up.telemetry(1, 2, b.pack(900))
up.event(1, 3, "flood", 1, 2, 152, 150, -95)
print(topics.up("city", "wl-1", "telemetry"))
loaded()
from protocols import up_status
up_status.state(1, 4, True, "1.4.2", 3, 3, "water")
up_status.state(1, 5, False)
up_status.health(1, 6, 60, heap_free=1000, rssi=-71, errors={"i2c": 2}, fault="echo_timeout")
up_status.ack(1, 7, 77, 1, ["bad_threshold"], 3, 123)
up_status.ota_progress(1, 8, 77, 5, 40, "CRASHED", "1.5.0")
up_status.pull(1, 9, 77, 1, 4096, 8)
loaded()
"""
    out = check_micropython(code, heap="110k", path=[compiled]).splitlines()
    assert out[0] == "dt/city/wl-1/telemetry"
    assert out[1] == repr(HOT_PATH)
    assert out[2] == repr(sorted(HOT_PATH + ["protocols.up_status"]))


def test_heap_the_hot_path_keeps(compiled):
    """What the node keeps resident of protocols/ (110 KB heap): at most 15 KB, the encoder (protocols.cbor)
    4 KB. Measured in a fresh VM, interned names included (a new pool of them counts where it is made)."""
    code = """
import gc
def used():
    gc.collect()
    return gc.mem_alloc()
start = used()
import protocols.errors
errors = used()
import protocols.cbor
encoder = used()
from protocols import senml_pack, topics, up
print(encoder - errors, used() - start)
"""
    encoder, total = map(int, check_micropython(code, heap="110k", path=[compiled]).split())
    print("protocols on the node's hot path: encoder %d bytes, all %d bytes" % (encoder, total))
    assert encoder <= 4096
    assert total <= 15 * 1024


def test_up_status_loaded_per_call_leaves_nothing_behind(compiled):
    """As the node sends a birth (agent.transient.run): the same bytes, and afterwards neither the module
    nor its code on the heap. Its names were interned by an earlier call, as at start-up (agent/startup.py):
    those stay, whatever is dropped."""
    from protocols import up_status

    code = """
import binascii, gc, sys
from agent import transient
from protocols import up
def used():
    gc.collect()
    return gc.mem_alloc()
transient.run("protocols.up_status", "pull", 1, 1, 2, 3, 4, 5)
start = used()
birth = transient.run("protocols.up_status", "state", 1, 4, True, "1.4.2", 3, 3, "water")
left = used() - start
print(binascii.hexlify(birth).decode())
print("protocols.up_status" in sys.modules, hasattr(sys.modules["protocols"], "up_status"))
start = used()
from protocols import up_status
print(left, used() - start)
"""
    out = check_micropython(code, heap="110k", path=[compiled]).splitlines()
    assert out[0] == up_status.state(1, 4, True, "1.4.2", 3, 3, "water").hex()
    assert out[1] == "False False"
    left, resident = map(int, out[2].split())
    print("up_status: %d bytes left after a call (the birth's bytes), %d bytes resident" % (left, resident))
    assert left < resident // 4
