"""The local stack: Redis, SeaweedFS S3, Celery workers and Flower on loopback ports.

One object starts the whole fleet on one machine, for development, demos and tests, with the
same security as a real deployment: Redis has a password, S3 has credentials and refuses
anonymous requests, Flower asks for a login. Secrets are random, live only in 0600 files under
``dir`` and in the children's environments, and are never printed or put on a command line.

Children run in their own sessions, so Ctrl-C on a foreground ``convatlas stack up`` reaches
only the CLI, which then stops them in order, and ``--detach`` leaves them running. Their pids
(no secrets) are in ``dir/stack.json``, so ``LocalStack.from_dir(dir).stop()`` works from any
process. Logs are in ``dir/logs/``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from convatlas.shared.config import Settings, redact_url
from convatlas.stack.redis_acl import ROLES as REDIS_ROLES
from convatlas.stack.s3_identities import ROLES as S3_IDENTITY_ROLES
from convatlas.stack.s3_identities import protect_bucket, role_actions
from convatlas.stack.servers import (
    LOOPBACK,
    RedisServer,
    SeaweedS3Server,
    ServerError,
    _live,
    _Managed,
    _write_private,
    free_port,
    wait_for_http,
)
from convatlas.stack.tls import tls_in
from convatlas.workers.config import redis_tls, worker_argv

STATE_FILE = "stack.json"
ENV_FILE = "stack.env"
ROLES_FILE = "roles.json"  # the worker's and Flower's own credentials (0600)
BUCKET = "convatlas"
PREFIX = "convatlas"
REGION = "us-east-1"
S3_ROLES = ("s3", "master", "volume", "filer", "admin")
PORT_NAMES = ("redis", "flower", *S3_ROLES)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Inherited variables that would change what the children talk to or how they authenticate.
_SCRUB = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "FLOWER_UNAUTHENTICATED_API")


class StackError(RuntimeError):
    """The stack could not be started, reached or stopped."""


# ---------------------------------------------------------------------------------------------
# processes by pid (for a stack started by another process)


def _proc_start(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (tells a reused pid from ours); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _pid_alive(pid: int, start: int | None) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    now = _proc_start(pid)
    return now is not None and (start is None or now == start)


def _wait_gone(pid: int, start: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, start):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate_pid(pid: int, start: int | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL to its whole session group after ``timeout`` seconds."""
    if not _pid_alive(pid, start):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, start, timeout):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # children are session leaders: pgid == pid
        _wait_gone(pid, start, 10)


# ---------------------------------------------------------------------------------------------
# the parts


class _Part(_Managed):
    """A child in its own session, logging to ``logs/<name>.log``, stoppable by pid too.

    Not registered for ``convatlas.stack.servers``' kill-at-exit: a detached stack must outlive the CLI
    that started it. ``LocalStack`` registers its own exit hook until it is detached.
    """

    adopted: tuple[int, int | None] | None = None  # (pid, start) of a child of another process

    new_session = True  # each part leads its own process group: Ctrl-C reaches only the CLI

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        super()._spawn(argv, env)
        _live.discard(self)  # a detached stack outlives this process: no kill-at-exit
        self.adopted = None

    def record(self) -> dict[str, int | None] | None:
        if self.proc is not None:
            return {"pid": self.proc.pid, "start": _proc_start(self.proc.pid)}
        if self.adopted is not None:
            return {"pid": self.adopted[0], "start": self.adopted[1]}
        return None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.adopted is not None and _pid_alive(*self.adopted)

    def halt(self, timeout: float) -> None:
        """Stop it whether this process or another one started it."""
        if self.proc is not None:
            self._stop_own(timeout)
        elif self.adopted is not None:
            _terminate_pid(*self.adopted, timeout)
            self._after_exit()
        self.adopted = None

    def _stop_own(self, timeout: float) -> None:
        self._terminate(timeout)


class _Redis(_Part, RedisServer):
    name = "redis"

    def _stop_own(self, timeout: float) -> None:
        RedisServer.stop(self)


class _S3(_Part, SeaweedS3Server):
    name = "s3"

    def _stop_own(self, timeout: float) -> None:
        SeaweedS3Server.stop(self, timeout)


class _Celery(_Part):
    """A worker or Flower: started by ``launch``, readiness checked by ``LocalStack``."""

    def __init__(self, dir: Path, name: str, argv: list[str]) -> None:
        self.name = name
        super().__init__(dir)
        self.argv = argv

    def launch(self, env: dict[str, str]) -> None:
        self._spawn(self.argv, env=env)


# ---------------------------------------------------------------------------------------------
# the stack


class LocalStack:
    """Redis + SeaweedFS S3 + ``workers`` Celery workers + Flower, all on 127.0.0.1.

    ``ports`` may fix any of ``redis``, ``flower``, ``s3``, ``master``, ``volume``, ``filer``,
    ``admin``; the rest are free ports. Secrets are random unless given. ``worker_env`` adds
    environment variables for the workers (e.g. a short visibility timeout in fault tests);
    it is not kept in ``stack.json``, so a stack rebuilt by ``from_dir`` restarts workers
    without it.
    """

    def __init__(
        self,
        dir: Path | str,
        workers: int = 1,
        concurrency: int | None = None,  # None: workers.config.default_concurrency
        ports: Mapping[str, int] | None = None,
        flower_user: str = "admin",
        flower_password: str | None = None,
        *,
        celery_app: str = "convatlas.workers.app",
        cache_dir: Path | str | None = None,
        worker_env: Mapping[str, str] | None = None,
        pythonpath: Iterable[Path | str] = (),
        redis_password: str | None = None,
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        role_secrets: Mapping[str, Any] | None = None,
        worker_stop_timeout: float = 30.0,
        ready_timeout: float = 90.0,
        tls: bool = False,
    ) -> None:
        """``tls``: Redis (``rediss://``) and S3 (``https``) serve TLS only, with a private CA
        in ``dir/tls`` (``convatlas.stack.tls``); clients trust it through ``CONVATLAS_TLS_CA``
        (in ``stack.env``)."""
        if workers < 0 or (concurrency is not None and concurrency < 1):
            raise ValueError("workers must be >= 0 and concurrency >= 1")
        ports = dict(ports or {})
        if unknown := set(ports) - set(PORT_NAMES):
            raise ValueError(f"unknown port names {sorted(unknown)}; known: {PORT_NAMES}")
        self.flower_password = flower_password or secrets.token_urlsafe(18)
        for what, value in (("flower_user", flower_user), ("flower_password", self.flower_password)):
            if not value or any(c in value for c in ":,\n"):
                raise ValueError(f"{what} must be non-empty without ':', ',' or newlines")
        self.dir = Path(dir).resolve()
        self.logs = self.dir / "logs"
        self.concurrency = concurrency
        self.flower_user = flower_user
        self.celery_app = celery_app
        self.cache_dir = Path(cache_dir) if cache_dir else Settings.from_env().cache_dir
        self.worker_env = dict(worker_env or {})
        self.pythonpath = [str(Path(p).resolve()) for p in pythonpath]
        self.worker_stop_timeout = worker_stop_timeout
        self.ready_timeout = ready_timeout
        self.host = socket.gethostname()

        # least privilege: the producer (``env()``), the workers and Flower each get their
        # own Redis ACL user and S3 identity (``redis_acl``, ``s3_identities``); the operator's
        # password and Admin key stay with the stack
        known = dict(role_secrets or {})
        self.tls = tls_in(self.dir / "tls") if tls else None
        self.redis = _Redis(
            self.dir / "redis",
            port=ports.get("redis"),
            password=redis_password or secrets.token_urlsafe(24),
            persistent=True,
            users=known.get("redis") or {r: secrets.token_urlsafe(24) for r in REDIS_ROLES},
            tls=self.tls,
        )
        s3_ports = {k: v for k, v in ports.items() if k in S3_ROLES}
        self.s3 = _S3(self.dir / "s3", s3_access_key, s3_secret_key, ports=s3_ports,
                      roles={r: role_actions(r, BUCKET, PREFIX) for r in S3_IDENTITY_ROLES},
                      tls=self.tls)
        if known.get("s3"):
            self.s3.role_keys = {r: (k[0], k[1]) for r, k in known["s3"].items()}
        self.flower_port = ports.get("flower") or free_port()
        self.flower = _Celery(self.dir / "flower", "flower", self._celery_argv(
            "flower", f"--address={LOOPBACK}", f"--port={self.flower_port}"
        ))
        self.worker_count = workers
        self.workers = [self._make_worker(i) for i in range(workers)]
        for part in self._parts():
            part.log_path = self.logs / f"{part.name}.log"
        self._control_app: Any = None

    def __repr__(self) -> str:  # no secrets
        return f"LocalStack(dir={str(self.dir)!r}, workers={len(self.workers)})"

    # --- construction helpers

    def _celery_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.celery_app, *args]

    def _make_worker(self, i: int) -> _Celery:
        name = f"worker{i}"
        argv = worker_argv(Settings.from_env(), concurrency=self.concurrency,
                           hostname=f"{name}@%h")
        return _Celery(self.dir / "workers", name, argv)

    @property
    def threads(self) -> int:
        """Task threads per worker: ``concurrency``, else the workers' documented default."""
        from convatlas.workers.config import default_concurrency

        return self.concurrency or default_concurrency(Settings.from_env())

    def node(self, i: int) -> str:
        """Celery node name of worker ``i`` (what ``inspect``/``ping`` and Flower show)."""
        return f"worker{i}@{self.host}"

    def _parts(self) -> list[_Part]:
        """In start order; stop goes the other way."""
        return [self.redis, self.s3, *self.workers, self.flower]

    # --- what clients need

    def env(self) -> dict[str, str]:
        """Client (producer) settings: broker URL with the producer's ACL user, S3 endpoint,
        bucket and the producer's keys, cache dir, and Flower's login; also written to
        ``dir/stack.env`` (0600) for ``source``. The workers' and Flower's credentials are
        in ``dir/roles.json`` (0600)."""
        env = {
            **self._role_env("producer"),
            "CONVATLAS_S3_ENDPOINT": self.s3.endpoint_url,
            "CONVATLAS_S3_BUCKET": BUCKET,
            "CONVATLAS_S3_PREFIX": PREFIX,
            "CONVATLAS_S3_REGION": REGION,
            "CONVATLAS_CACHE_DIR": str(self.cache_dir),
            "CONVATLAS_FLOWER_URL": self.urls()["flower"],
            "CONVATLAS_FLOWER_USER": self.flower_user,
            "CONVATLAS_FLOWER_PASSWORD": self.flower_password,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_private(self.dir / ENV_FILE, format_env(env))
        operator = {"redis_password": self.redis.password, "s3_access_key": self.s3.access_key,
                    "s3_secret_key": self.s3.secret_key}
        _write_private(self.dir / ROLES_FILE, json.dumps(
            {"operator": operator, "redis": self.redis.users, "s3": self.s3.role_keys}))
        return env

    def _role_env(self, role: str) -> dict[str, str]:
        """Broker, result backend and S3 keys of ``role`` (Flower: no S3 keys)."""
        url = self.redis.role_url(role)
        env = {"CONVATLAS_BROKER_URL": url, "CONVATLAS_RESULT_BACKEND": url}
        if self.tls:
            env["CONVATLAS_TLS_CA"] = str(self.tls.ca)
        if role in self.s3.role_keys:
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = self.s3.role_keys[role]
        return env

    def urls(self) -> dict[str, str]:
        """Printable addresses: no passwords."""
        return {
            "flower": f"http://{LOOPBACK}:{self.flower_port}/",
            "s3": self.s3.endpoint_url,
            "broker": redact_url(self.redis.url),
        }

    def _child_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        paths = [*self.pythonpath, str(PROJECT_ROOT), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env.update(extra)
        return env

    def _worker_env(self) -> dict[str, str]:
        client = {k: v for k, v in self.env().items() if not k.startswith("CONVATLAS_FLOWER_")}
        env = self._child_env({**client, **self._role_env("worker"), **self.worker_env})
        if self.worker_count > 1 and not env.get("CONVATLAS_TF_THREADS"):
            # N workers on this host: each its share of the cores, or their threads fight
            env["CONVATLAS_TF_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.worker_count))
        return env

    def _flower_env(self) -> dict[str, str]:
        env = self._child_env({
            **self._role_env("flower"),
            "FLOWER_BASIC_AUTH": f"{self.flower_user}:{self.flower_password}",
        })
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(k, None)  # Flower never touches S3
        return env

    # --- start

    def start(self) -> None:
        """Start everything and wait until each part answers; on failure stop what started."""
        if self.running_elsewhere():
            raise StackError(f"a stack is already running in {self.dir}: stop it first")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        atexit.register(self._stop_at_exit)
        try:
            with ThreadPoolExecutor(1) as pool:  # SeaweedFS boots while the rest starts
                s3_ready = pool.submit(self._start_s3)
                self.redis.start()
                self._save_state()
                worker_env = self._worker_env()
                for w in self.workers:
                    w.launch(worker_env)
                self.flower.launch(self._flower_env())
                self._save_state()
                s3_ready.result()
            self._wait_flower()
            self._wait_workers(self.workers)
        except BaseException:
            self.stop()
            raise
        self._save_state()

    def _start_s3(self) -> None:
        from convatlas.shared.storage import S3Storage

        self.s3.start(timeout=self.ready_timeout)
        operator = S3Storage(
            BUCKET, endpoint_url=self.s3.endpoint_url, region=REGION,
            access_key=self.s3.access_key, secret_key=self.s3.secret_key,
            ca_bundle=str(self.tls.ca) if self.tls else None,
        )
        operator.ensure_bucket()
        protect_bucket(operator.client, BUCKET, PREFIX)  # no one deletes inputs, results, weights

    def _wait_flower(self) -> None:
        try:
            status = wait_for_http(
                self.urls()["flower"] + "healthcheck", self.ready_timeout, self.flower.proc
            )
        except (TimeoutError, ServerError) as e:
            raise self.flower._fail_start(str(e)) from None
        if status != 200:
            raise self.flower._fail_start(f"/healthcheck answered {status}")

    def _control(self) -> Any:
        """A bare Celery app on our broker, for ``ping`` (imports no tasks)."""
        if self._control_app is None:
            from celery import Celery

            self._control_app = Celery("convatlas-stack", broker=self.redis.url,
                                       set_as_current=False)
            self._control_app.conf.update(redis_tls(Settings(
                broker_url=self.redis.url, tls_ca=str(self.tls.ca) if self.tls else "")))
        return self._control_app

    def ping(self, nodes: list[str], timeout: float = 1.0) -> set[str]:
        """The nodes among ``nodes`` that answer a Celery ping within ``timeout``."""
        try:
            replies = self._control().control.ping(destination=nodes, timeout=timeout)
        except Exception:  # broker restarting: nobody answered
            return set()
        return {node for reply in replies for node in reply}

    def _wait_workers(self, workers: list[_Celery]) -> None:
        pending = {self.node(self.workers.index(w)): w for w in workers}
        deadline = time.monotonic() + self.ready_timeout
        while pending:
            for w in pending.values():
                if not w.alive():
                    raise w._fail_start(f"exited with code {w.proc and w.proc.returncode}")
            for node in self.ping(list(pending), timeout=0.5):
                pending.pop(node, None)
            if pending and time.monotonic() > deadline:
                w = next(iter(pending.values()))
                raise w._fail_start(f"no answer to ping after {self.ready_timeout}s")

    # --- stop

    def stop(self) -> None:
        """Flower, then the workers (warm shutdown, SIGKILL after ``worker_stop_timeout``),
        then S3, then Redis. Removes ``stack.json`` and ``stack.env``. Idempotent.

        Parts that another process restarted (their new pids are only in ``stack.json``) are
        stopped too.
        """
        others = self._recorded_elsewhere()

        def halt(part: _Part, timeout: float) -> None:
            part.halt(timeout)
            if part.name in others:
                _terminate_pid(*others[part.name], timeout)

        halt(self.flower, 10)
        if self.workers:
            with ThreadPoolExecutor(len(self.workers)) as pool:
                list(pool.map(lambda w: halt(w, self.worker_stop_timeout), self.workers))
        halt(self.s3, 15)
        halt(self.redis, 10)
        if self._control_app is not None:
            with contextlib.suppress(Exception):
                self._control_app.close()
            self._control_app = None
        for name in (STATE_FILE, ENV_FILE, ROLES_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
        atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def detach(self) -> None:
        """Leave the stack running when this process exits (``stack up --detach``)."""
        atexit.unregister(self._stop_at_exit)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state

    def pids(self) -> dict[str, int]:
        """Pid of every part that has one (each is also its process group id)."""
        out = {}
        for part in self._parts():
            rec = part.record()
            if rec is not None:
                out[part.name] = int(rec["pid"])  # type: ignore[arg-type]
        return out

    def dead(self) -> list[str]:
        """Names of parts that were started and are not running now."""
        return [p.name for p in self._parts() if p.record() is not None and not p.alive()]

    def restart_workers(self) -> list[str]:
        """Start a fresh worker for each one this process started that has exited (compose's
        ``restart: unless-stopped``): a worker past ``CONVATLAS_WORKER_MAX_RSS`` drains and
        exits on purpose (``workers.memory_guard``), and a crashed one holds tasks that come
        back. A worker stopped on purpose (exit code 0, SIGTERM, SIGINT: ``stack down``) stays
        stopped. Returns the names restarted, each with the code it exited with."""
        stopped = (0, -signal.SIGTERM, -signal.SIGINT)
        restarted = []
        for w in self.workers:
            if w.proc is not None and w.proc.poll() not in (None, *stopped):
                code = w.proc.returncode
                w.launch(self._worker_env())
                restarted.append(f"{w.name} (exit code {code})")
        if restarted:
            self._save_state()
        return restarted

    def running_elsewhere(self) -> bool:
        """Whether ``dir/stack.json`` names a live process (another stack in this dir)."""
        try:
            state = json.loads((self.dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return False
        return any(_pid_alive(r["pid"], r.get("start")) for r in state.get("pids", {}).values())

    def _recorded_elsewhere(self) -> dict[str, tuple[int, int | None]]:
        """Pids in ``stack.json`` that are not this object's own (restarted elsewhere)."""
        try:
            recorded = json.loads((self.dir / STATE_FILE).read_text()).get("pids", {})
        except (OSError, ValueError):
            return {}
        own = {p.name: p.record() for p in self._parts()}
        return {
            name: (int(r["pid"]), r.get("start"))
            for name, r in recorded.items()
            if own.get(name) is None or own[name]["pid"] != r["pid"]  # type: ignore[index]
        }

    def _pid_records(self) -> dict[str, dict[str, int | None]]:
        """Own pids, except where this object's process is dead and another process has
        restarted that part (keep the live one)."""
        others = self._recorded_elsewhere()
        out = {}
        for part in self._parts():
            rec = part.record()
            other = others.get(part.name)
            if other is not None and not part.alive() and _pid_alive(*other):
                rec = {"pid": other[0], "start": other[1]}
            if rec is not None:
                out[part.name] = rec
        return out

    def _save_state(self) -> None:
        ports = {"redis": self.redis.port, "flower": self.flower_port, **self.s3.ports}
        state = {
            "version": 1,
            "celery_app": self.celery_app,
            "workers": len(self.workers),
            "concurrency": self.concurrency,
            "flower_user": self.flower_user,
            "cache_dir": str(self.cache_dir),
            "pythonpath": self.pythonpath,
            "host": self.host,
            "ports": ports,
            "tls": self.tls is not None,
            "pids": self._pid_records(),
        }
        _write_private(self.dir / STATE_FILE, json.dumps(state, indent=2) + "\n")

    @classmethod
    def from_dir(cls, dir: Path | str) -> LocalStack:
        """The stack described by ``dir/stack.json`` (and ``stack.env`` for its secrets), to
        stop, inspect or restart parts of it from another process."""
        dir = Path(dir).resolve()
        try:
            state = json.loads((dir / STATE_FILE).read_text())
        except FileNotFoundError:
            raise StackError(f"no stack in {dir} ({STATE_FILE} missing)") from None
        env = read_env(dir / ENV_FILE)
        try:
            roles = json.loads((dir / ROLES_FILE).read_text())
        except (OSError, ValueError):
            roles = {}
        operator = roles.get("operator", {})
        stack = cls(
            dir,
            workers=state["workers"],
            concurrency=state["concurrency"],
            ports=state["ports"],
            flower_user=state["flower_user"],
            flower_password=env.get("CONVATLAS_FLOWER_PASSWORD"),
            celery_app=state["celery_app"],
            cache_dir=state["cache_dir"],
            pythonpath=state.get("pythonpath", ()),
            redis_password=operator.get("redis_password"),
            s3_access_key=operator.get("s3_access_key"),
            s3_secret_key=operator.get("s3_secret_key"),
            role_secrets=roles,
            tls=bool(state.get("tls")),
        )
        for part in stack._parts():
            rec = state["pids"].get(part.name)
            if rec is not None:
                part.adopted = (int(rec["pid"]), rec.get("start"))
        return stack


# ---------------------------------------------------------------------------------------------
# env files


def format_env(env: Mapping[str, str]) -> str:
    """``export K='v'`` lines that a POSIX shell can ``source`` or ``eval``."""
    head = "# convatlas local stack: secrets inside, keep private (mode 0600)\n"
    return head + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def read_env(path: Path) -> dict[str, str]:
    """Parse what ``format_env`` wrote; empty when the file is missing."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    out = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            k, v = words[1].split("=", 1)
            out[k] = v
    return out
