"""Mosquitto's files from the registry (passwd, acl, mosquitto.conf, a systemd drop-in), reload, run.

A device may publish only under its own `dt/<fleet>/<id>/#` and read only its own `cmd/<fleet>/<id>/#`;
the fleet's services connect as `fleet-ops`, whose secret is made once and kept in FLEET_HOME/ops.secret.
The fleet rewrites passwd and acl whenever a credential changes and sends mosquitto SIGHUP, which
re-reads both without dropping the clients that are still allowed (Mosquitto 2 disconnects the others).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fleet.credentials import OPS_USER, mosquitto_hash, new_secret
from fleet.errors import FleetError
from fleet.home import fleet_home, fleet_name, private_dir, write_atomic
from fleet.registry import Registry

BROKER_DIR = "broker"
OPS_SECRET_FILE = "ops.secret"
SETTINGS_FILE = "broker.json"  # the listener chosen by `fleet broker config`, kept for later rewrites
DEFAULT_PORT = 1883
DEFAULT_BIND = "127.0.0.1"
OPEN_FILES = 65536  # one descriptor per connected node, plus the broker's own
# Per client. Mosquitto's default of 1000 silently drops the rest of a burst. Only the ingest's persistent
# session ever queues much: while it restarts the broker keeps everything for it, up to a million
# messages (about 86 s of a megacity's average 11,600/s) or 256 MB, whichever comes first.
MAX_QUEUED = 1_000_000
MAX_QUEUED_BYTES = 256 * 1024 * 1024
MAX_INFLIGHT = 20


@dataclass(frozen=True)
class BrokerFiles:
    """Where `write_broker_files` wrote, and the listener it configured."""

    folder: Path
    conf: Path
    passwd: Path
    acl: Path
    dropin: Path
    pid_file: Path
    port: int
    bind: str
    devices: int  # device accounts in passwd (fleet-ops not counted)


def broker_dir(home: Path | None = None) -> Path:
    """The default broker folder: FLEET_HOME/broker."""
    return (home or fleet_home()) / BROKER_DIR


def ops_secret(home: Path | None = None) -> str:
    """The fleet-ops account's secret, made on first use and kept 0600 in FLEET_HOME/ops.secret."""
    path = (home or fleet_home()) / OPS_SECRET_FILE
    if not path.exists():
        tmp = path.with_name("." + path.name + ".%d.new" % os.getpid())
        write_atomic(tmp, (new_secret() + "\n").encode(), 0o600)
        try:
            os.link(tmp, path)  # fails if another process made it first: then both use that one
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if not secret:
        raise FleetError("%s is empty; delete it and rerun `fleet broker config` (then restart the fleet's "
                         "services with the new secret)" % path)
    return secret


def write_broker_files(registry: Registry, folder: Path | None = None, *, home: Path | None = None,
                       port: int | None = None, bind: str | None = None) -> BrokerFiles:
    """Write passwd, acl, mosquitto.conf and mosquitto.service.d/cityfleet.conf into `folder`.

    `port`/`bind` default to those of the last call for this folder, else 1883 on 127.0.0.1, so a
    later rewrite (after a provision or a retirement) keeps the listener. Each file is replaced
    atomically, under a lock, from a fresh read of the registry."""
    home = home or fleet_home()
    folder = private_dir(Path(folder) if folder else broker_dir(home))
    fleet = fleet_name(home)
    secret = ops_secret(home)
    with _locked(folder):
        settings = _settings(folder, port, bind)
        entries = registry.password_entries()
        for _device, username, _hash in entries:
            if username == OPS_USER:
                raise FleetError("a device uses the reserved MQTT username %r; retire it" % OPS_USER)
        files = BrokerFiles(folder, folder / "mosquitto.conf", folder / "passwd", folder / "acl",
                            folder / "mosquitto.service.d" / "cityfleet.conf", folder / "mosquitto.pid",
                            settings["port"], settings["bind"], len(entries))
        # Derived salt: the same secret gives the same line, so an unchanged fleet rewrites the same bytes.
        ops_salt = hashlib.sha256(b"cityfleet-ops:" + secret.encode()).digest()[:12]
        passwd = [(OPS_USER, mosquitto_hash(secret, ops_salt))] + [(u, h) for _d, u, h in entries]
        write_atomic(files.passwd, "".join("%s:%s\n" % pair for pair in passwd).encode(), 0o600)
        write_atomic(files.acl, acl_text(fleet, [(d, u) for d, u, _h in entries]).encode(), 0o640)
        write_atomic(files.conf, conf_text(files, settings["user"]).encode(), 0o640)
        files.dropin.parent.mkdir(mode=0o755, exist_ok=True)
        write_atomic(files.dropin, dropin_text(files.conf).encode(), 0o644)
        write_atomic(folder / SETTINGS_FILE, (json.dumps(settings, indent=1) + "\n").encode(), 0o600)
    return files


def acl_text(fleet: str, devices: list[tuple[str, str]]) -> str:
    """The ACL file: fleet-ops reads all telemetry and sends all commands; each (device id, username)
    writes only its own dt/ and reads only its own cmd/ (Mosquitto denies what no line allows)."""
    lines = ["# Generated by `fleet broker config` from the registry of fleet %r; do not edit." % fleet,
             "", "user " + OPS_USER, "topic read dt/%s/#" % fleet, "topic write cmd/%s/#" % fleet]
    for device, username in devices:
        lines += ["", "user " + username, "topic write dt/%s/%s/#" % (fleet, device),
                  "topic read cmd/%s/%s/#" % (fleet, device)]
    return "\n".join(lines) + "\n"


def conf_text(files: BrokerFiles, user: str) -> str:
    """A ready mosquitto.conf that uses the generated passwd and acl."""
    return """\
# Mosquitto for the cityfleet fleet, generated by `fleet broker config`; do not edit, rerun it.
# The fleet rewrites passwd and acl when devices change and sends SIGHUP (re-read, clients stay).
#
# Every connected node holds a file descriptor: the service manager must raise the open-files limit
# (a shell's ulimit does not reach a service). For systemd, install
#   %(dropin)s
# as /etc/systemd/system/mosquitto.service.d/cityfleet.conf (LimitNOFILE=%(nofile)d).
per_listener_settings false
listener %(port)d %(bind)s
allow_anonymous false
password_file %(passwd)s
acl_file %(acl)s
pid_file %(pid)s
# Mosquitto started as root switches to this user, which must be able to read passwd and acl.
user %(user)s
persistence true
persistence_location %(folder)s/
autosave_interval 60
# Per client. The default (1000) silently drops the rest of a burst, e.g. while the ingest restarts.
max_queued_messages %(queued)d
max_queued_bytes %(queued_bytes)d
max_inflight_messages %(inflight)d
max_connections -1
# Small messages both ways (OTA chunk windows, command round trips): no Nagle delay waiting for an ACK.
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
""" % {"dropin": files.dropin, "nofile": OPEN_FILES, "port": files.port, "bind": files.bind,
       "passwd": files.passwd, "acl": files.acl, "pid": files.pid_file, "user": user,
       "folder": files.folder, "queued": MAX_QUEUED, "queued_bytes": MAX_QUEUED_BYTES,
       "inflight": MAX_INFLIGHT}


def dropin_text(conf: Path) -> str:
    """systemd drop-in for mosquitto.service: the open-files limit (and, commented, our config)."""
    return """\
# Generated by `fleet broker config`. Install as /etc/systemd/system/mosquitto.service.d/cityfleet.conf,
# then: systemctl daemon-reload && systemctl restart mosquitto
[Service]
LimitNOFILE=%d
# To run this fleet's generated configuration, uncomment:
#ExecStart=
#ExecStart=/usr/sbin/mosquitto -c %s
""" % (OPEN_FILES, conf)


def reload_broker(folder: Path | None = None, *, home: Path | None = None) -> bool:
    """SIGHUP the mosquitto named by the folder's pid file, if it runs; True when signalled."""
    pid = _running_pid(Path(folder) if folder else broker_dir(home))
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False
    except PermissionError:
        raise FleetError("not allowed to signal mosquitto (pid %d); run `systemctl reload mosquitto` or "
                         "rerun as its user" % pid) from None
    return True


def run_broker(folder: Path | None = None, *, home: Path | None = None,
               timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start mosquitto on the folder's generated config, open-files limit raised; return once it
    listens and has written its pid file. Its output goes to <folder>/mosquitto.log. Stop it yourself."""
    folder = Path(folder) if folder else broker_dir(home)
    settings = _settings(folder, None, None)
    if not (folder / "mosquitto.conf").exists():
        raise FleetError("no mosquitto.conf in %s; run `fleet broker config` first" % folder)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log_path = folder / "mosquitto.log"
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        try:
            proc = subprocess.Popen([binary, "-c", str(folder / "mosquitto.conf")], stdout=log, stderr=log,
                                    preexec_fn=_raise_open_files)
        except FileNotFoundError:
            raise FleetError("mosquitto is not installed (apt-get install mosquitto)") from None
    host = "127.0.0.1" if settings["bind"] in ("0.0.0.0", "::", "") else settings["bind"]
    deadline = time.monotonic() + timeout
    while not (_accepts(host, settings["port"]) and _running_pid(folder) == proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise FleetError("mosquitto did not start on %s:%d: %s" % (host, settings["port"], " | ".join(tail)))
        time.sleep(0.02)
    return proc


def _raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _running_pid(folder: Path) -> int | None:
    """The pid in the folder's pid file when that process is a live mosquitto, else None."""
    try:
        pid = int((folder / "mosquitto.pid").read_text().strip())
        comm = Path("/proc/%d/comm" % pid).read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "mosquitto" else None


def _settings(folder: Path, port: int | None, bind: str | None) -> dict:
    try:
        saved = json.loads((folder / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        saved = {}
    settings = {"port": port or saved.get("port") or DEFAULT_PORT, "bind": bind or saved.get("bind") or DEFAULT_BIND,
                "user": saved.get("user") or pwd.getpwuid(os.geteuid()).pw_name}
    if not isinstance(settings["port"], int) or not 0 < settings["port"] < 65536:
        raise FleetError("bad broker port %r; use 1..65535" % (settings["port"],))
    if not isinstance(settings["bind"], str) or not settings["bind"] or settings["bind"].split() != [settings["bind"]]:
        raise FleetError("bad bind address %r; use an address such as 127.0.0.1 or 0.0.0.0" % (settings["bind"],))
    return settings


class _locked:
    """An exclusive flock on <folder>/.lock: two fleet processes never interleave their rewrites."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
