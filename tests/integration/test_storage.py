"""The storage contract against a real SeaweedFS and a local directory, plus the servers the
test suite and the local stack rely on (no mocks)."""

from __future__ import annotations

import os
import pickle
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from convatlas.shared.config import Settings
from convatlas.shared.storage import (
    AccessDenied,
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    Storage,
    StorageError,
    StorageUnavailable,
    s3_storage_from_settings,
    validate_key,
)
from convatlas.stack.servers import RedisServer, SeaweedS3Server, ServerError, free_port

BAD_KEYS = ["../x", "/abs", "a//b", "a\\b", "a/../b", "./a", "a/", "", "a\nb", "a\x00b", "a/."]


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    return request.getfixturevalue(f"{request.param}_storage")


def _s3(server: SeaweedS3Server, prefix: str = "p", **kw: object) -> S3Storage:
    return S3Storage(
        "convatlas-test",
        prefix,
        endpoint_url=server.endpoint_url,
        access_key=kw.pop("access_key", server.access_key),  # type: ignore[arg-type]
        secret_key=kw.pop("secret_key", server.secret_key),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


# --- the contract, both back ends ------------------------------------------------------------


def test_roundtrip(storage: Storage) -> None:
    assert isinstance(storage, Storage)
    assert not storage.exists("jobs/abc/grid.png")
    storage.put_bytes("jobs/abc/grid.png", b"\x89PNG...", "image/png")
    assert storage.exists("jobs/abc/grid.png")
    assert storage.get_bytes("jobs/abc/grid.png") == b"\x89PNG..."
    storage.put_bytes("jobs/abc/grid.png", b"v2")
    assert storage.get_bytes("jobs/abc/grid.png") == b"v2"
    storage.put_bytes("empty", b"")
    assert storage.get_bytes("empty") == b""
    storage.delete("jobs/abc/grid.png")
    assert not storage.exists("jobs/abc/grid.png")
    storage.delete("jobs/abc/grid.png")  # idempotent


def test_missing_key(storage: Storage) -> None:
    with pytest.raises(ObjectNotFound) as info:
        storage.get_bytes("nope/missing.json")
    assert isinstance(info.value, KeyError)
    assert not isinstance(info.value, StorageUnavailable)
    assert "nope/missing.json" in str(info.value)


def test_list_keys(storage: Storage) -> None:
    keys = ["a/1", "a/2", "a/sub/3", "ab/4", "b/5"]
    for k in reversed(keys):
        storage.put_bytes(k, k.encode())
    assert storage.list_keys("") == keys
    assert storage.list_keys("a/") == ["a/1", "a/2", "a/sub/3"]
    assert storage.list_keys("a") == ["a/1", "a/2", "a/sub/3", "ab/4"]  # string prefix
    assert storage.list_keys("a/sub/") == ["a/sub/3"]
    assert storage.list_keys("zzz/") == []


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_refused(storage: Storage, key: str) -> None:
    for call in (
        lambda: storage.put_bytes(key, b"x"),
        lambda: storage.get_bytes(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
        lambda: storage.url(key, 60),
    ):
        with pytest.raises(InvalidKey):
            call()


def test_invalid_list_prefix_refused(storage: Storage) -> None:
    for prefix in ("../", "/abs", "a//", "a\\"):
        with pytest.raises(InvalidKey):
            storage.list_keys(prefix)


def test_validate_key_accepts_ordinary_keys() -> None:
    for key in ("a", "jobs/0f3a/grid.png", "x.y/..z/a..b", "ünïcode/ключ.json"):
        assert validate_key(key) == key
    with pytest.raises(InvalidKey):
        validate_key("a" * 1025)


def test_exceptions_pickle() -> None:
    """Celery ships task exceptions between processes."""
    for exc in (ObjectNotFound("k"), StorageUnavailable("down"), AccessDenied("no")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)


# --- local specifics ---------------------------------------------------------------------------


def test_local_put_is_atomic(local_storage: LocalStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    local_storage.put_bytes("r/out.json", b"old")

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError):
        local_storage.put_bytes("r/out.json", b"new")
    with pytest.raises(StorageError):
        local_storage.put_bytes("r/other.json", b"new")
    monkeypatch.undo()
    assert local_storage.get_bytes("r/out.json") == b"old"
    assert not local_storage.exists("r/other.json")
    assert sorted(p.name for p in (local_storage.root / "r").iterdir()) == ["out.json"]


def test_local_hides_partials_and_symlink_escape(
    local_storage: LocalStorage, tmp_path: Path
) -> None:
    local_storage.put_bytes("d/x", b"1")
    (local_storage.root / "d" / ".x.0123456789abcdef.partial").write_bytes(b"half")
    assert local_storage.list_keys("") == ["d/x"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (local_storage.root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey):
        local_storage.put_bytes("link/evil", b"x")
    assert not any(outside.iterdir())


def test_local_url(local_storage: LocalStorage) -> None:
    local_storage.put_bytes("a/b.png", b"png")
    url = local_storage.url("a/b.png", 60)
    assert url.startswith("file://")
    with urllib.request.urlopen(url) as resp:
        assert resp.read() == b"png"


# --- S3 specifics ------------------------------------------------------------------------------


def test_s3_keys_live_under_prefix(s3_storage: S3Storage) -> None:
    s3_storage.put_bytes("k.json", b"{}", "application/json")
    head = s3_storage.client.head_object(
        Bucket=s3_storage.bucket, Key=f"{s3_storage.prefix}/k.json"
    )
    assert head["ContentType"] == "application/json"
    assert s3_storage.list_keys("") == ["k.json"]


def test_s3_list_follows_pages(s3_server: SeaweedS3Server, s3_storage: S3Storage) -> None:
    small = _s3(s3_server, s3_storage.prefix, page_size=2)
    keys = [f"k/{i:02d}" for i in range(7)]
    for k in keys:
        small.put_bytes(k, b"x")
    calls = []
    small.client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: calls.append(1))
    assert small.list_keys("k/") == keys
    assert len(calls) == 4


def test_presigned_url_works_then_expires(s3_storage: S3Storage) -> None:
    s3_storage.put_bytes("img.png", b"pixels", "image/png")
    with urllib.request.urlopen(s3_storage.url("img.png", 60)) as resp:
        assert resp.read() == b"pixels"
    short = s3_storage.url("img.png", 1)
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(short)
    assert info.value.code == 403


def test_wrong_credentials_refused(s3_server: SeaweedS3Server, s3_storage: S3Storage) -> None:
    s3_storage.put_bytes("secret.txt", b"s")
    for ak, sk in ((s3_server.access_key, "wrong-secret"), ("AKUNKNOWN", s3_server.secret_key)):
        bad = _s3(s3_server, s3_storage.prefix, access_key=ak, secret_key=sk, max_attempts=1)
        with pytest.raises(AccessDenied):
            bad.get_bytes("secret.txt")
        with pytest.raises(AccessDenied):
            bad.put_bytes("evil.txt", b"x")
    assert not s3_storage.exists("evil.txt")


def test_anonymous_requests_refused(s3_server: SeaweedS3Server, s3_storage: S3Storage) -> None:
    s3_storage.put_bytes("secret.txt", b"s")
    base = f"{s3_server.endpoint_url}/{s3_storage.bucket}/{s3_storage.prefix}"
    put = urllib.request.Request(f"{base}/anon.txt", data=b"x", method="PUT")
    for req in (put, f"{base}/secret.txt", f"{s3_server.endpoint_url}/{s3_storage.bucket}"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req)
        assert info.value.code == 403
    assert not s3_storage.exists("anon.txt")


def test_no_credentials_at_all(s3_server: SeaweedS3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    nocreds = S3Storage("convatlas-test", "p", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(AccessDenied):
        nocreds.put_bytes("x", b"x")


def test_from_settings_uses_standard_credential_chain(
    s3_server: SeaweedS3Server, s3_storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    settings = Settings(
        s3_endpoint=s3_server.endpoint_url, s3_bucket="convatlas-test", s3_prefix=s3_storage.prefix
    )
    st = s3_storage_from_settings(settings)
    st.put_bytes("via-env", b"ok")
    assert s3_storage.get_bytes("via-env") == b"ok"
    shown = st.describe() + repr(st) + repr(s3_server)
    assert s3_server.secret_key not in shown and s3_server.access_key not in shown
    assert s3_server.endpoint_url in st.describe() and "convatlas-test" in st.describe()


def test_seaweed_restart_keeps_objects(tmp_path: Path) -> None:
    server = SeaweedS3Server(tmp_path / "sw")
    with server:
        st = _s3(server, max_attempts=1, connect_timeout=1)
        st.ensure_bucket()
        st.put_bytes("before/stop.bin", b"kept")
        endpoint = server.endpoint_url
        server.stop()
        with pytest.raises(StorageUnavailable):
            st.get_bytes("before/stop.bin")
        with pytest.raises(StorageUnavailable):
            st.put_bytes("during/down.bin", b"x")
        server.start()
        assert server.endpoint_url == endpoint
        assert st.get_bytes("before/stop.bin") == b"kept"  # same client object reconnects
        st.put_bytes("after/restart.bin", b"new")
        server.kill()  # crash without a graceful shutdown
        server.start()
        assert st.list_keys("") == ["after/restart.bin", "before/stop.bin"]
        assert st.get_bytes("after/restart.bin") == b"new"
    assert not server.running
    assert not list(Path("/tmp").glob(f"seaweedfs-*-{server.ports['s3']}.sock"))


def test_seaweed_start_failure_shows_log(tmp_path: Path) -> None:
    server = SeaweedS3Server(tmp_path / "busy")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", server.ports["s3"]))
        blocker.listen()
        with pytest.raises(ServerError, match="last lines of .*seaweedfs.log"):
            server.start(timeout=15)
    assert not server.running


# --- servers -----------------------------------------------------------------------------------


def test_redis_requires_password(redis_server: RedisServer) -> None:
    assert redis_server.ping()
    assert redis_server.password and redis_server.password not in redis_server.redacted_url
    client = redis.Redis.from_url(redis_server.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    for url in (
        f"redis://127.0.0.1:{redis_server.port}/0",
        f"redis://:wrong@127.0.0.1:{redis_server.port}/0",
    ):
        with pytest.raises((redis.AuthenticationError, redis.ResponseError)):
            redis.Redis.from_url(url).get("k")
    conf = redis_server.dir / "redis.conf"
    assert conf.stat().st_mode & 0o077 == 0


def test_redis_restart_same_port(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "r", password="pw") as server:
        port = server.port
        server.restart()
        assert server.port == port and server.ping()
    assert not server.running and not server.ping()


def test_free_port_pairs() -> None:
    seen = set()
    for _ in range(5):
        p = free_port(also_free_plus=10000)
        assert p not in seen and p + 10000 < 32768
        seen.add(p)
