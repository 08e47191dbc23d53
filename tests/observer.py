"""A test's view of the broker: a real MQTT client on `dt/#` decoding every message with the fleet's
side of `protocols/`, and publishing fleet commands. Used by the agent's VM and HIL tests alike."""

from __future__ import annotations

import queue
import time

import paho.mqtt.client as mqtt

from protocols import messages, topics


class Observer:
    """A paho client on `dt/#` that decodes every message with the fleet's protocol code."""

    def __init__(self, port: int) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.seen: list[tuple[str, str, object]] = []  # (device, kind, message) in arrival order
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.inbox.put((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("dt/#", 1)
        self.client.loop_start()

    def _pump(self, timeout: float) -> bool:
        try:
            raw_topic, payload = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return False
        topic = topics.parse(raw_topic)
        self.seen.append((topic.device, topic.kind, messages.decode(topic, payload)))
        return True

    def wait_for(self, kind: str, predicate=lambda msg: True, timeout: float = 60.0, after: int = 0):
        """The first message of `kind` (index >= `after` in arrival order) satisfying `predicate`."""
        deadline = time.monotonic() + timeout
        index = after
        while True:
            while index < len(self.seen):
                _, seen_kind, message = self.seen[index]
                index += 1
                if seen_kind == kind and predicate(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                tail = [(k, m.to_obj() if hasattr(m, "to_obj") else m) for _, k, m in self.seen[-8:]]
                raise AssertionError("no matching %s within %.0f s; last seen: %r" % (kind, timeout, tail))
            self._pump(min(left, 0.5))

    def drain(self, seconds: float) -> None:
        """Decode whatever arrives for `seconds` (for long runs that judge everything at the end)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._pump(min(left, 0.5))

    def of(self, kind: str) -> list:
        """Every message of `kind` received so far."""
        return [message for _, seen_kind, message in self.seen if seen_kind == kind]

    def command(self, fleet: str, device: str, message) -> None:
        """Publish a fleet command to one device."""
        topic = topics.down(fleet, device, message.KIND)
        self.client.publish(str(topic), messages.encode(message), qos=1, retain=topic.retain)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
