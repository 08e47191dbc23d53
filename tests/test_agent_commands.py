"""The node's command reader (agent/command_read.py decode): header checks only, under CPython and the VM."""

from __future__ import annotations

import pytest

from agent.command_read import decode
from protocols import messages
from protocols.cbor import dumps
from protocols.commands import Ping, Reboot
from protocols.config import Alarm, Config
from tests.mpvm import check_micropython

TOPIC = b"cmd/city/wl-1/"


def test_config_ping_and_reboot_are_read():
    config = Config(7, 3, alarms={"flood": Alarm("level", 270, 240, 5, 2)}, sample={"level": 2})
    kind, cid, doc = decode(TOPIC + b"config", messages.encode(config))
    assert (kind, cid) == ("config", 7) and doc == config.to_obj()
    assert decode(TOPIC + b"ping", messages.encode(Ping(8, 123456789))) == ("ping", 8, 123456789)
    assert decode(TOPIC + b"reboot", messages.encode(Reboot(9))) == ("reboot", 9, None)
    assert decode(TOPIC + b"ota", dumps({0: 1, 1: 10})) == ("ota", 10, None)  # acked as unsupported


@pytest.mark.parametrize("payload", [
    b"\xff\x00", b"", dumps([1, 2]), dumps({0: 1}), dumps({0: 0, 1: 5}), dumps({0: 1, 1: True}),
    dumps({0: 1, 1: -1}), dumps({0: 1, 1: 2**32}), dumps({0: 1, 1: 5, 2: "x"}), b"\xa1\x00" + b"\x01" * 2000,
    dumps({0: 1, 1: 5, 2: [[[[[1]]]]]}),
], ids=["bad-cbor", "empty", "array", "no-cid", "version-0", "bool-cid", "negative-cid", "cid-too-big",
        "bad-echo", "oversize", "too-deep"])
def test_malformed_commands_are_dropped_without_an_ack(payload):
    assert decode(TOPIC + b"ping", payload) == (None, None, None)


def test_the_vm_reads_the_same():
    config = messages.encode(Config(7, 3, sample={"level": 2}))
    check_micropython(
        "from agent.command_read import decode\n"
        "assert decode(b'cmd/c/d/config', %r) == ('config', 7, {0: 1, 1: 7, 2: 3, 4: {'level': 2}})\n"
        "assert decode(b'cmd/c/d/ping', %r) == ('ping', 8, 99)\n"
        "assert decode(b'cmd/c/d/ping', b'\\xff') == (None, None, None)\n"
        % (config, messages.encode(Ping(8, 99))))
