"""Where the atlas is written: a local folder, or a ``Storage`` (the fleet's bucket) under a prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from convatlas.shared import keys
from convatlas.shared.storage import Storage, validate_key

__all__ = ["DirSink", "Sink", "StorageSink", "site_prefix", "summary_key"]


class Sink(Protocol):
    """Where the site is written: a folder, or a bucket under a prefix."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...


class DirSink:
    """A local folder (plain writes: the site is rebuilt, not a store of record)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.root.joinpath(*validate_key(key).split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class StorageSink:
    """A ``Storage`` (e.g. the fleet's bucket) under ``prefix`` (``site_prefix(model)``)."""

    def __init__(self, storage: Storage, prefix: str) -> None:
        self.storage, self.prefix = storage, prefix.strip("/")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.storage.put_bytes(f"{self.prefix}/{key}" if self.prefix else key, data, content_type)


def site_prefix(model: str) -> str:
    """Where ``convatlas atlas --fleet`` puts a model's site in the bucket."""
    return f"atlas/{keys.model_slug(model)}"


def summary_key(model: str) -> str:
    """The last fleet build's summary (beside the site, so every key inside it is linked)."""
    return f"{site_prefix(model)}.json"
