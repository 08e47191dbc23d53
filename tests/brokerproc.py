"""A private Mosquitto for tests: generated config in a temporary folder, a free loopback port.

    with Broker(tmp_path, users={"node": "secret"}) as broker:
        ... connect to 127.0.0.1:broker.port ...
        broker.stop(); broker.start()     # same port again, e.g. to test reconnects

Never the system broker on 1883: every instance binds 127.0.0.1 on a port the OS hands out.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
StrPath = str | os.PathLike[str]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Return once 127.0.0.1:port accepts a connection; raise with the reason after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError as e:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("mosquitto exited with %s before listening" % proc.returncode) from e
            if time.monotonic() > deadline:
                raise RuntimeError("nothing listens on 127.0.0.1:%d after %.0f s" % (port, timeout)) from e
            time.sleep(0.02)


class Broker:
    """One mosquitto process; `users` (name -> password) switches anonymous access off, `acl` is the
    text of an ACL file. `extra` lines are appended to the config. `tls` (cafile, certfile, keyfile)
    adds a TLS listener beside the plain one, on 127.0.0.1:tls_port."""

    def __init__(self, folder: str | os.PathLike[str], users: dict[str, str] | None = None,
                 acl: str | None = None, port: int | None = None, extra: str = "",
                 tls: tuple[StrPath, StrPath, StrPath] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = self.folder / "mosquitto.log"
        self.config = self.folder / "mosquitto.conf"
        # Run as ourselves: mosquitto started by root would switch to the "mosquitto" user, which cannot
        # read the password file in a private tmp_path.
        lines = ["listener %d 127.0.0.1" % self.port, "user " + pwd.getpwuid(os.getuid()).pw_name,
                 "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice", "log_type information",
                 "connection_messages true"]
        if users:
            pwfile = self.folder / "passwd"
            pwfile.write_text("")
            for name, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pwfile), name, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", "password_file %s" % pwfile]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            aclfile = self.folder / "acl"
            aclfile.write_text(acl)
            lines.append("acl_file %s" % aclfile)
        self.tls_port: int | None = None
        if tls is not None:  # last: cafile, certfile and keyfile belong to the listener above them
            self.tls_port = free_port()
            lines += ["listener %d 127.0.0.1" % self.tls_port, "cafile %s" % tls[0], "certfile %s" % tls[1],
                      "keyfile %s" % tls[2]]
        self.config.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        """Start mosquitto and wait until its port accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        deadline = time.monotonic() + timeout
        while True:  # right after stop() the port may still be held for a moment
            logf = open(self.log, "ab")
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=logf, stderr=logf)
            logf.close()
            try:
                wait_port(self.port, timeout=max(0.5, deadline - time.monotonic()), proc=self.proc)
                return self
            except RuntimeError:
                if "Address already in use" not in self.log_text() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("mosquitto did not start; log:\n" + self.log_text()) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Kill mosquitto (SIGKILL: the clients see the connection vanish, as on a crash)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def log_text(self) -> str:
        """What the broker logged so far (to explain failures)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
