"""The photos of a request: files taken as given, folders scanned, each hashed once.

Files are read one at a time (only their sha256 is kept), so a folder of any size can be
planned; refused files are listed with the reason, never silently skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from convatlas.producer.plans.plan import InputFile, PlanError
from convatlas.shared.hashing import sha256_file
from convatlas.shared.images.decode import IMAGE_SUFFIXES

__all__ = ["collect_images", "hash_inputs", "iter_hashed", "iter_images"]


def iter_images(paths: list[str]) -> Iterator[tuple[Path | None, str, str]]:
    """``(path, name, "")`` per image file, ``(None, name, reason)`` per refused one, one at a
    time. Files given directly are taken as they are; folders are scanned recursively (sorted).

    In a folder, a symlink whose target lies outside that folder is refused (a shared folder
    must not leak other files); files with other suffixes are listed as ignored. Every path is
    checked before the first file is yielded (``PlanError``).
    """
    for p in paths:
        if not Path(p).is_dir() and not Path(p).is_file():
            raise PlanError(f"no such file or folder: {p}")
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            yield path, path.name, ""
            continue
        root = path.resolve()
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for fn in sorted(filenames):
                f = Path(dirpath) / fn
                name = str(f.relative_to(path))
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    yield None, name, f"ignored: suffix {f.suffix or '(none)'} is not an image type"
                elif f.is_symlink() and not f.resolve().is_relative_to(root):
                    yield None, name, "refused: symlink points outside the folder"
                elif not f.is_file():
                    yield None, name, "refused: not a regular file"
                else:
                    yield f, name, ""


def collect_images(paths: list[str]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """``iter_images`` as two lists: (path, name) of the images, (name, reason) of the rest."""
    found: list[tuple[Path, str]] = []
    rejected: list[tuple[str, str]] = []
    for path, name, reason in iter_images(paths):
        if path is None:
            rejected.append((name, reason))
        else:
            found.append((path, name))
    return found, rejected


def iter_hashed(paths: list[str]) -> Iterator[InputFile | tuple[str, str]]:
    """Each image of ``paths`` as an ``InputFile`` with its sha256, each file refused or
    unreadable as (name, reason), in ``iter_images`` order, one at a time."""
    for path, name, reason in iter_images(paths):
        if path is None:
            yield name, reason
            continue
        try:
            sha, size = sha256_file(path)
        except OSError as exc:
            yield name, f"unreadable: {exc.strerror or exc}"
            continue
        yield InputFile(path, name, sha, size)


def hash_inputs(paths: list[str]) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """``iter_hashed`` as two lists: the inputs, and (name, reason) of the files left out."""
    inputs: list[InputFile] = []
    rejected: list[tuple[str, str]] = []
    for item in iter_hashed(paths):
        if isinstance(item, InputFile):
            inputs.append(item)
        else:
            rejected.append(item)
    return inputs, rejected
