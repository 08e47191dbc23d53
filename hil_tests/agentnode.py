"""Put the agent on an emulated board and watch what it publishes, for the agent's HIL tests.

`install()` writes the built bundle and an identity file straight into the board's littlefs2 image
while its power is off (littlefs-python, the same on-flash format the VM mounts), then powers it on so
`main.py` starts the agent. Flashing over the serial line is the fleet's job (`fleet flash`, issue 5) and
is tested there; here the agent's behaviour is under test. `Observer` subscribes to the fleet's topics
with a real MQTT client and decodes every message with the fleet's side of `protocols/`.
"""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from littlefs import LittleFS

from firmware.build import build_bundle
from protocols import messages, topics

BLOCK = 4096
_BUNDLES: dict[str, Path] = {}


def bundle(tmp_root: Path) -> Path:
    """The emulator bundle, built once per test process."""
    if "emulator" not in _BUNDLES:
        out = tmp_root / "bundle-emulator"
        build_bundle("emulator", "0.1.0-hil", out)
        _BUNDLES["emulator"] = out
    return _BUNDLES["emulator"]


def write_flash(image: Path, files: dict[str, bytes]) -> None:
    """Write `files` (path -> bytes) into a littlefs2 image, creating folders as needed."""
    data = bytearray(image.read_bytes())
    fs = LittleFS(block_size=BLOCK, block_count=len(data) // BLOCK, mount=False)
    fs.context.buffer = data
    fs.mount()
    for path, content in sorted(files.items()):
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            folder = "/" + "/".join(parts[:depth])
            try:
                fs.mkdir(folder)
            except FileExistsError:
                pass
        with fs.open(path, "wb") as handle:
            handle.write(content)
    fs.unmount()
    image.write_bytes(bytes(data))


def install(board, bundle_dir: Path, identity: dict) -> None:
    """Install the agent bundle and `identity` on `board` (power cycled) and boot it."""
    files = {"/device.json": json.dumps(identity).encode()}
    for path in sorted(bundle_dir.rglob("*")):
        if path.is_file():
            files["/" + path.relative_to(bundle_dir).as_posix()] = path.read_bytes()
    board.power_cut()
    write_flash(board.flash_image, files)
    board.power_on()


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
