"""The start of an MQTT session: CONNECT and SUBSCRIBE, for agent/mqtt.py's MQTTClient.

A node sends each of them once a session, so their code is not kept resident: MQTTClient.connect and
.subscribe load this module through agent.transient.call, which drops it again, and the coroutine each
returns keeps its code alive only until it finishes. Nothing resident may import it.

These functions are the client's own methods, moved: they take the client first and use its private
attributes (_r, _w, _pid, _top, _pay, _n, _drainer, _ack, _ka, _at, _heard, _asked, _tasks) and
methods (_send, _reader, _supervise, _die). Section numbers are MQTT 3.1.1.
"""

import asyncio

from agent.errors import AgentError
from agent.mqtt import LOST, _error, _topic_name, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython (tests, tools): const() is the value itself
    const = int  # type: ignore[assignment, no-redef]

# SUBSCRIBE's packet id: the same as agent.mqtt's _SUB_PID, which its reader checks the SUBACK against
# (a const with a leading underscore is no module attribute on MicroPython, so it cannot be imported).
_SUB_PID = const(0xFFFF)


async def connect(client, client_id, keepalive, clean_session, will, user, password):
    """MQTTClient.connect after the streams are set: CONNECT, then wait for CONNACK."""
    flags = 2 if clean_session else 0  # 3.1.2.4
    args = [b"MQTT", 0, keepalive, client_id]  # 3.1.2.1, level and flags (below), 3.1.2.10, 3.1.3
    if will is not None:
        topic, payload, qos, retain = will
        if qos not in (0, 1):
            raise _error("bad arg %r" % (will,))
        flags |= 4 | qos << 3 | (0x20 if retain else 0)  # 3.1.2.5-7
        args += (_topic_name(topic), payload)
    if user is not None:
        flags |= 0x80  # 3.1.2.8
        args.append(user)
    if password is not None:
        if user is None:  # 3.1.2.9
            raise _error("bad arg %r" % (user,))
        flags |= 0x40
        args.append(password)
    args[1] = 0x400 | flags  # protocol level 4 (3.1.2.2), then the flags byte
    for i in range(len(client._pid)):
        client._pid[i] = 0
        client._top[i] = client._pay[i] = None
    client._n += 1
    client.error = client._drainer = None
    client._ack = -2
    client._ka = keepalive * 1000
    client._at = client._heard = client._asked = ticks_ms()
    client._tasks = [asyncio.create_task(client._reader()), asyncio.create_task(client._supervise())]
    try:
        await client._send(0x10, args)
    except AgentError as e:
        client._die(e)  # a bad argument (nothing went out), or the session has ended already
    if not await client.wait_ack(0):
        raise client.error  # what ended it (a CONNACK may be in while the CONNECT drains)
    if client._ack:
        raise _error("refused: %s" % client._ack, client._ack)  # the code says why (3.2.2.3)
    return client.session_present


async def subscribe(client, topic_filter, qos):
    """MQTTClient.subscribe: SUBSCRIBE, then wait for SUBACK."""
    if not topic_filter or qos not in (0, 1) or client._ack == -1:
        raise _error("bad arg %r" % (topic_filter,))
    client._ack = -1
    client._asked = ticks_ms()
    try:
        await client._send(0x82, (_SUB_PID, topic_filter), b"\x00\x01"[qos : qos + 1])  # 3.8.1: 0010
    except AgentError:
        if client.error is None:  # our caller's mistake: nothing went out
            client._ack = 0
        raise
    if not await client.wait_ack(0):
        raise _error("lost: %s" % (client.error,), LOST)
    if client._ack == 0x80:
        raise _error("refused: %s" % (topic_filter,))
    return client._ack
