"""How the `boardemu` verbs reach a running board host: JSON lines over loopback TCP.

The host writes DIR/host.json (pid, control port, a random token; mode 0600) once it listens.
A request is `{"token", "op", "args"}`, the answer `{"ok": true, "result": ...}` or
`{"ok": false, "error": "<one line for the user>"}`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from pathlib import Path

from tools.boardemu import BoardEmuError

log = logging.getLogger("boardemu.control")
HOST_FILE = "host.json"


class ControlServer:
    """Serves `handler(op, args) -> JSON-able` on 127.0.0.1; BoardEmuError/ValueError become errors."""

    def __init__(self, handler):
        self._handler = handler
        self.token = secrets.token_hex(16)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, name="control", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                stream.write(json.dumps(self._answer(line)).encode() + b"\n")
                stream.flush()

    def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or request.get("token") != self.token:
                return {"ok": False, "error": "bad or missing token"}
            return {"ok": True, "result": self._handler(request.get("op"), request.get("args") or {})}
        except (BoardEmuError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # report, keep serving: the board must outlive a bad request
            log.exception("control request failed")
            return {"ok": False, "error": "internal error: %s (see host.log)" % exc}

    def close(self) -> None:
        """Stop listening."""
        self._listener.close()


def write_host_file(state_dir: Path, info: dict) -> None:
    """DIR/host.json, readable by the owner only (it holds the token)."""
    path = Path(state_dir) / HOST_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def read_host_file(state_dir: Path) -> dict | None:
    """The running host's host.json, or None when there is none (or it is being replaced)."""
    try:
        return json.loads((Path(state_dir) / HOST_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (it may be a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def call(state_dir: Path, op: str, timeout: float = 30.0, **args):
    """Run one verb on the board host of `state_dir`; BoardEmuError when it is not running or refuses."""
    info = read_host_file(state_dir)
    if info is None or not pid_alive(int(info.get("pid", 0))):
        raise BoardEmuError("no board is running in %s: start it with `boardemu start --dir %s`"
                            % (state_dir, state_dir))
    request = {"token": info["token"], "op": op, "args": args}
    try:
        with socket.create_connection(("127.0.0.1", info["control_port"]), timeout=timeout) as conn:
            conn.sendall(json.dumps(request).encode() + b"\n")
            with conn.makefile("rb") as stream:
                line = stream.readline()
    except OSError as exc:
        raise BoardEmuError("the board host of %s does not answer (%s): see %s/host.log"
                            % (state_dir, exc, state_dir)) from exc
    if not line:
        if op == "stop":
            return None  # it stopped before it could answer
        raise BoardEmuError("the board host of %s hung up: see %s/host.log" % (state_dir, state_dir))
    answer = json.loads(line)
    if not answer.get("ok"):
        raise BoardEmuError(answer.get("error", "unknown error"))
    return answer.get("result")
