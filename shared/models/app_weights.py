"""The keras.applications weights files: local cache, then the fleet's bucket, then the internet.

A worker looks in its local cache (Keras's ``~/.keras/models`` or ``CONVATLAS_CACHE_DIR/models``),
then in the bucket (put there once by ``convatlas models fetch``), and only then downloads; a
worker never downloads when the bucket has the file. Every file is checked before use: it must
open as a whole HDF5 file (a truncated download does not) and match the hash Keras publishes
for that name. In the bucket a file lives under its sha256 (content-addressed) with a small
pointer per file name, so a producer learns the weights' sha256 (part of every result key)
without downloading them. No Keras import here: the producer only hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from convatlas.shared.config import Settings
from convatlas.shared.hashing import file_sha256
from convatlas.shared.models.applications import App, get_app
from convatlas.shared.models.zoo import WeightsUnavailable

BUCKET_DIR = "models/weights"
NO_BUCKET = ("no bucket configured: set CONVATLAS_S3_ENDPOINT (and AWS_ACCESS_KEY_ID / "
             "AWS_SECRET_ACCESS_KEY) or CONVATLAS_STORAGE_DIR, as the fleet's workers have")
_published_override: dict[str, str] = {}  # tests only: name → hash (see override_published_hash)


class WeightsRejected(ValueError):
    """A weights file that is truncated or whose hash is not the published one."""


def fetch_command(name: str) -> str:
    return f"convatlas models fetch {name}"


def published_hash(app: App) -> str:
    return _published_override.get(app.name, app.published_hash)


def override_published_hash(name: str, file_hash: str) -> None:
    """For tests only: accept a file made offline (random weights) in place of Keras's."""
    _published_override[name] = file_hash


def blob_key(sha256: str) -> str:
    return f"{BUCKET_DIR}/sha256/{sha256}"


def pointer_key(app: App) -> str:
    return f"{BUCKET_DIR}/by-name/{app.weights_name}.json"


def cache_dirs(settings: Settings) -> list[Path]:
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    return [keras_home / "models", settings.cache_dir / "models"]


def local_file(name: str, settings: Settings) -> Path | None:
    """The weights file in a local cache (no check: checked when loaded)."""
    app = get_app(name)
    candidates = [d / app.weights_name for d in cache_dirs(settings)]
    if app.name == "vgg16" and settings.vgg16_weights:  # CONVATLAS_VGG16_WEIGHTS, as before
        candidates.insert(0, Path(settings.vgg16_weights).expanduser())
    return next((p for p in candidates if p.is_file()), None)


def _hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(app: App, path: Path) -> str:
    """The file's sha256 once it opens as a whole HDF5 file and matches the published hash."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if not list(f.keys()) and "layer_names" not in f.attrs:
                raise WeightsRejected(f"{path}: an empty HDF5 file, not {app.weights_name}")
    except OSError as exc:  # HDF5 refuses a file shorter than its superblock says ("truncated")
        raise WeightsRejected(
            f"{path} is not a whole HDF5 weights file (truncated download?): {exc}"
        ) from exc
    expected = published_hash(app)
    if expected:
        algorithm = "sha256" if len(expected) == 64 else "md5"
        got = _hash(path, algorithm)
        if got != expected:
            raise WeightsRejected(
                f"{path}: {algorithm} {got} is not the {algorithm} Keras publishes for "
                f"{app.weights_name} ({expected}): refusing it"
            )
    return file_sha256(path)


# --- the bucket ----------------------------------------------------------------------------------


def bucket(settings: Settings) -> Any | None:
    """The fleet's storage when this process is configured for one (a local directory, an S3
    endpoint or AWS credentials), else None: a plain local run does not probe AWS."""
    if not (settings.storage_dir or settings.s3_endpoint or os.environ.get("AWS_ACCESS_KEY_ID")):
        return None
    from convatlas.shared.storage import storage_from_settings

    return storage_from_settings(settings)


def bucket_pointer(name: str, settings: Settings) -> dict[str, Any] | None:
    """The bucket's record of the model's weights ({sha256, size, ...}), or None."""
    from convatlas.shared.storage import ObjectNotFound, StorageError

    store = bucket(settings)
    if store is None:
        return None
    try:
        return dict(json.loads(store.get_bytes(pointer_key(get_app(name)))))
    except ObjectNotFound:
        return None
    except StorageError:
        return None


def put_in_bucket(name: str, path: Path, settings: Settings) -> tuple[str, str]:
    """Verify ``path`` and store it under its sha256 plus a pointer by file name:
    (the blob's key, sha256)."""
    app = get_app(name)
    store = bucket(settings)
    if store is None:
        raise WeightsUnavailable(NO_BUCKET)
    sha = verify(app, path)
    key = blob_key(sha)
    if not store.exists(key):
        store.put_bytes(key, path.read_bytes())
    record = {"model": app.name, "weights_name": app.weights_name, "sha256": sha,
              "size": path.stat().st_size, "published_hash": published_hash(app)}
    store.put_bytes(pointer_key(app), json.dumps(record).encode(), "application/json")
    return key, sha


def _from_bucket(app: App, settings: Settings) -> Path | None:
    pointer = bucket_pointer(app.name, settings)
    if pointer is None:
        return None
    store = bucket(settings)
    assert store is not None
    dest_dir = settings.cache_dir / "models"
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{app.weights_name}.")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(store.get_bytes(blob_key(pointer["sha256"])))
        sha = verify(app, tmp)
        if sha != pointer["sha256"]:
            raise WeightsRejected(f"the bucket's {app.weights_name} has sha256 {sha}, its pointer says {pointer['sha256']}")
        dest = dest_dir / app.weights_name
        tmp.replace(dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _download(app: App) -> Path:
    """Keras's own download (into ~/.keras/models), checked against the published hash."""
    from convatlas.shared.tf_env import prepare_keras

    prepare_keras()
    from keras.utils import get_file

    try:
        return Path(get_file(app.weights_name, app.weights_url, cache_subdir="models",
                             file_hash=app.published_hash or None))
    except Exception as exc:
        raise WeightsUnavailable(
            f"{app.name} needs ImageNet weights ({app.weights_name}): not in the local cache, "
            f"not in the bucket, and the download failed ({type(exc).__name__}: {exc}). Run "
            f"`{fetch_command(app.name)}` where there is internet, or `{fetch_command(app.name)} "
            f"--from FILE`, to put them in the bucket for every worker."
        ) from exc


def resolve(name: str, settings: Settings, *, internet: bool = True) -> tuple[Path, str]:
    """(a verified weights file, its sha256): local cache, then the bucket, then the internet."""
    app = get_app(name)
    path = local_file(name, settings) or _from_bucket(app, settings)
    if path is None:
        if not internet:
            raise WeightsUnavailable(missing_message(name))
        path = _download(app)
    return path, verify(app, path)


def weights_sha256(name: str, settings: Settings) -> str:
    """The weights' sha256 for result keys, without downloading what the bucket holds."""
    path = local_file(name, settings)
    if path is not None:
        return file_sha256(path)
    pointer = bucket_pointer(name, settings)
    if pointer is not None:
        return str(pointer["sha256"])
    return resolve(name, settings)[1]


def where(name: str, settings: Settings) -> str:
    """Where the weights are reachable without internet: "local cache", "bucket" or ""."""
    if local_file(name, settings) is not None:
        return "local cache"
    if bucket_pointer(name, settings) is not None:
        return "bucket"
    return ""


def missing_message(name: str) -> str:
    app = get_app(name)
    return (f"{name} has no ImageNet weights here ({app.weights_name} is in no local cache and not "
            f"in the bucket): run `{fetch_command(name)}` (downloads, or `--from FILE`) to put them "
            f"in the bucket for the whole fleet")
