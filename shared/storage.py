"""Where results live: a local directory or an S3-compatible bucket, behind one small contract.

Workers and local mode write through ``Storage`` so the same code serves both. Keys are
relative, ``/``-separated and validated by ``validate_key`` in both back ends, so no key can
climb out of the root directory or the configured S3 prefix. Errors are sorted into three
kinds callers act on differently: ``ObjectNotFound`` (a fact), ``StorageUnavailable`` (retry
later) and ``StorageError`` (configuration or permission problem: retrying will not help).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from convatlas.shared.config import Settings

MAX_KEY_BYTES = 1024  # S3's limit for a whole key


class StorageError(Exception):
    """Storage refused or failed the request for a reason retrying will not fix."""


class ObjectNotFound(KeyError, StorageError):
    """No object under this key."""

    def __str__(self) -> str:  # KeyError would print the repr of the key
        return f"no object at key {self.args[0]!r}" if self.args else "object not found"


class StorageUnavailable(StorageError):
    """Storage could not be reached or answered 5xx after retries; try again later."""


class AccessDenied(StorageError):
    """Credentials missing, wrong, or lacking permission."""


class ClockSkewed(StorageUnavailable):
    """S3 refuses this machine's request signatures because its clock is off the server's by
    more than S3 allows (15 minutes). The request is fine, this machine is not: another
    machine can do the job, so it is retried there (``StorageUnavailable``), never failed."""


MAX_CLOCK_SKEW_S = 300.0  # a 403 whose response is dated further from this clock is the clock


def clock_skew(response: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds this machine's clock is ahead of the server that sent ``response`` (its
    ``Date`` header), when that passes ``MAX_CLOCK_SKEW_S``; None otherwise."""
    import email.utils
    import time

    date = (response.get("ResponseMetadata", {}).get("HTTPHeaders") or {}).get("date")
    if not date:
        return None
    try:
        server = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None
    skew = (now if now is not None else time.time()) - server
    return skew if abs(skew) > MAX_CLOCK_SKEW_S else None


class InvalidKey(ValueError):
    """A key that could escape its prefix or is otherwise unsafe."""


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise ``InvalidKey``.

    Refused: empty, absolute, backslashes, control characters, empty segments (``a//b``,
    trailing ``/``), ``.``/``..`` segments, more than 1024 UTF-8 bytes.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"empty or non-string key: {key!r}")
    if key.startswith("/"):
        raise InvalidKey(f"absolute key: {key!r}")
    if "\\" in key:
        raise InvalidKey(f"backslash in key: {key!r}")
    if any(unicodedata.category(c) == "Cc" for c in key):
        raise InvalidKey(f"control character in key: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"empty, '.' or '..' segment in key: {key!r}")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"key longer than {MAX_KEY_BYTES} bytes")
    return key


def _validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key-like string that may end in ``/``."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix


@runtime_checkable
class Storage(Protocol):
    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def url(self, key: str, expires: int) -> str: ...

    def describe(self) -> str: ...


# ---------------------------------------------------------------------------------------------
# local directory

_PARTIAL = re.compile(r"^\..+\.[0-9a-f]{16}\.partial$")


class LocalStorage:
    """Objects as files under ``root``. A put writes a hidden temp file in the target directory
    and ``os.replace``s it, so readers never see a half-written object. ``content_type`` is
    not kept, and a key cannot be both an object and a "directory" of others (S3 allows that).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        # A symlink planted inside root must not lead writes outside it.
        if not path.parent.resolve().is_relative_to(self.root):
            raise InvalidKey(f"key resolves outside the storage root: {key!r}")
        return path

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.partial"
            try:
                with open(tmp, "xb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        except OSError as e:
            raise StorageError(f"cannot write {key!r}: {e.strerror or e}") from e

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as e:
            raise StorageError(f"cannot read {key!r}: {e.strerror or e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        prefix = _validate_prefix(prefix)
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*base_dir.split("/")) if base_dir else self.root
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(start):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if _PARTIAL.match(name):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Idempotent, like S3's DELETE."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self._path(key).unlink()

    def url(self, key: str, expires: int) -> str:
        """A ``file://`` URI; ``expires`` does not apply to local files."""
        return self._path(key).as_uri()

    def describe(self) -> str:
        return f"local directory {self.root}"


# ---------------------------------------------------------------------------------------------
# S3


_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
}
_SKEWED = {"RequestTimeTooSkewed", "RequestExpired"}
_TRANSIENT = {
    *_SKEWED,
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "500",
    "502",
    "503",
    "504",
}


# An S3 endpoint that stops answering without refusing (packets dropped, a hung proxy) must
# not hold a thread for boto3's defaults (60 s per read, several attempts). Set on purpose: a
# connect gives up after S3_CONNECT_TIMEOUT_S, a read that gets no byte after
# S3_READ_TIMEOUT_S (well above a slow endpoint's seconds per request), and each call makes at
# most S3_MAX_ATTEMPTS attempts (botocore's standard mode: ≤ 1 + 2 s of backoff between them).
# So a call returns or raises ``StorageUnavailable`` within ``S3_CALL_BOUND_S``; the tasks then
# retry with their own backoff (``convatlas.workers.tasks``).
S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 15.0
S3_MAX_ATTEMPTS = 3
S3_CALL_BOUND_S = S3_MAX_ATTEMPTS * (S3_CONNECT_TIMEOUT_S + S3_READ_TIMEOUT_S) + 3.0


class S3Storage:
    """Objects in ``bucket`` under ``prefix`` on S3, MinIO or SeaweedFS.

    Credentials, when not given, come from boto3's standard chain (``AWS_ACCESS_KEY_ID``...).
    They are handed to boto3 and not kept on this object, and ``describe()``/``repr()`` never
    show them. The client is created lazily and again after ``fork()``, since Celery's prefork
    pool must not share connection pools across processes.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        create_bucket: bool = False,
        *,
        page_size: int = 1000,
        max_attempts: int = S3_MAX_ATTEMPTS,
        retry_mode: str = "standard",
        connect_timeout: float = S3_CONNECT_TIMEOUT_S,
        read_timeout: float = S3_READ_TIMEOUT_S,
        max_pool_connections: int = 64,
        ca_bundle: str | None = None,
    ) -> None:
        """``ca_bundle``: the CA that signs an https endpoint's certificate, when it is not a
        public one (``CONVATLAS_TLS_CA``)."""
        if len(bucket) < 3:
            raise ValueError("S3 bucket names have at least 3 characters")
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.page_size = page_size
        self._client_args: dict[str, Any] = {
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "max_attempts": max_attempts,
            "retry_mode": retry_mode,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            # a worker's task threads (up to its concurrency) share one client
            "max_pool_connections": max_pool_connections,
        }
        self._verify: str | None = ca_bundle or None
        self._client_obj: Any = None
        self._client_pid = 0
        self._lock = threading.Lock()
        if create_bucket:
            self.ensure_bucket()

    def __repr__(self) -> str:
        return f"S3Storage({self.describe()!r})"

    @property
    def client(self) -> Any:
        """The boto3 S3 client (path-style and s3v4 on custom endpoints, retries with backoff)."""
        if self._client_obj is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client_obj is None or self._client_pid != os.getpid():
                    self._client_obj = self._make_client()
                    self._client_pid = os.getpid()
        return self._client_obj

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        a = self._client_args
        session = boto3.session.Session(
            aws_access_key_id=a["aws_access_key_id"],
            aws_secret_access_key=a["aws_secret_access_key"],
            region_name=self.region,
        )
        config = Config(
            signature_version="s3v4",
            # Path-style for MinIO/SeaweedFS (no wildcard DNS); AWS picks its own style.
            s3={"addressing_style": "path" if self.endpoint_url else "auto"},
            retries={"mode": a["retry_mode"], "max_attempts": a["max_attempts"]},
            connect_timeout=a["connect_timeout"],
            read_timeout=a["read_timeout"],
            max_pool_connections=a["max_pool_connections"],
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config,
                              verify=self._verify)

    def _full(self, key: str) -> str:
        key = validate_key(key)
        full = f"{self.prefix}/{key}" if self.prefix else key
        if len(full.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidKey(f"key with prefix longer than {MAX_KEY_BYTES} bytes")
        return full

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Translate botocore's exceptions into this module's three kinds."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            HTTPClientError,
            IncompleteReadError,
            NoCredentialsError,
            PartialCredentialsError,
            SSLError,
        )

        what = f"{self.describe()} key {key!r}" if key else self.describe()
        try:
            yield
        except ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _NOT_FOUND and key is not None:
                raise ObjectNotFound(key) from None
            skew = clock_skew(e.response) if code in _SKEWED or status == 403 else None
            if skew is not None:
                raise ClockSkewed(
                    f"{code or status} from {what}: this machine's clock is {skew:+.0f} s off "
                    "the S3 server's, which refuses its signatures (set its clock: NTP)"
                ) from None
            if code in _DENIED:
                raise AccessDenied(f"{code} for {what}") from None
            if code in _TRANSIENT or status >= 500:
                raise StorageUnavailable(f"{code or status} from {what}") from None
            raise StorageError(f"{code or status} for {what}: {err.get('Message', '')}") from None
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise AccessDenied(f"no usable S3 credentials for {what}: {e}") from None
        except SSLError as e:  # a certificate nobody here trusts: retrying will not help
            raise StorageError(f"TLS with {what} failed: {e}; is CONVATLAS_TLS_CA the CA that "
                               "signed its certificate?") from None
        except (ConnectionError, HTTPClientError, IncompleteReadError) as e:
            raise StorageUnavailable(f"cannot reach {what}: {type(e).__name__}") from e
        except BotoCoreError as e:
            raise StorageError(f"{type(e).__name__} for {what}") from e

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent)."""
        from botocore.exceptions import ClientError

        with self._errors():
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as e:
                if str(e.response.get("Error", {}).get("Code")) not in {"404", "NoSuchBucket"}:
                    raise
            args: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self.client.create_bucket(**args)
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code"))
                if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        """One PUT: S3 makes the object visible whole or not at all."""
        full = self._full(key)
        with self._errors(key):
            self.client.put_object(
                Bucket=self.bucket, Key=full, Body=bytes(data), ContentType=content_type
            )

    def get_bytes(self, key: str) -> bytes:
        full = self._full(key)
        with self._errors(key):
            resp = self.client.get_object(Bucket=self.bucket, Key=full)
            return bytes(resp["Body"].read())

    def exists(self, key: str) -> bool:
        full = self._full(key)
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=full)
        except ObjectNotFound:
            return False
        return True

    def list_keys(self, prefix: str) -> list[str]:
        """All keys starting with ``prefix`` (relative to this storage), following every page."""
        prefix = _validate_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        with self._errors():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=base + prefix,
                PaginationConfig={"PageSize": self.page_size},
            )
            for page in pages:
                keys.extend(obj["Key"][len(base) :] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key succeeds."""
        full = self._full(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def url(self, key: str, expires: int) -> str:
        """A presigned GET URL valid ``expires`` seconds (computed locally, no request)."""
        if not 1 <= expires <= 604800:
            raise ValueError("presigned URLs last 1 s to 7 days")
        full = self._full(key)
        with self._errors(key):
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=expires
                )
            )

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS S3 ({self.region})"
        return f"s3://{self.bucket}/{self.prefix} at {where}"


def storage_from_settings(settings: Settings, *, create_bucket: bool = False) -> Storage:
    """The fleet's storage: ``CONVATLAS_STORAGE_DIR`` (a local directory, for a fleet whose
    producer and workers share one host or one file system) if set, else S3."""
    if settings.storage_dir:
        return LocalStorage(Path(settings.storage_dir).expanduser())
    return s3_storage_from_settings(settings, create_bucket=create_bucket)


def s3_storage_from_settings(settings: Settings, *, create_bucket: bool = False) -> S3Storage:
    """The fleet's storage. Callers that want local mode build ``LocalStorage`` themselves."""
    return S3Storage(
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint or None,
        region=settings.s3_region,
        create_bucket=create_bucket,
        ca_bundle=settings.tls_ca or None,
    )
