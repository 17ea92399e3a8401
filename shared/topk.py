"""The mergeable top-k of dataset examples: the best ``k`` photos per unit of one layer.

**The merge** (:meth:`TopK.merge`) is a join: the result depends only on the *set* of candidates
seen, so it is associative, commutative and idempotent. Candidates are keyed by (photo sha256,
position); a photo counts once per unit (its best candidate), and the order is score descending,
then sha256, then position, so equal scores rank the same way in every merge order. A
redelivered batch therefore changes nothing. A :class:`TopK` holds ``k`` candidates per unit and
the sha256 of the photos they reference, so memory is O(k × channels), never O(photos).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Candidate", "TopK"]

_EMPTY = -1


@dataclass(frozen=True)
class Candidate:
    image_sha256: str
    position: tuple[int, int]  # (row, column) in the layer's map
    score: float


@dataclass(eq=False)
class TopK:
    """The best ``k`` candidates per unit of one layer (see the module docstring).

    ``shas`` is sorted and holds only referenced photos; ``photo`` (C, k) indexes it (-1 =
    empty slot); ``score`` (C, k) float32 (-inf when empty); ``pos`` (C, k, 2) int32. Slots are
    in rank order: score descending, then sha256, then position.
    """

    k: int
    shas: list[str]
    score: np.ndarray
    photo: np.ndarray
    pos: np.ndarray
    names: dict[str, str] = field(default_factory=dict)  # display names (not part of identity)

    @property
    def units(self) -> int:
        return int(self.score.shape[0])

    @classmethod
    def empty(cls, units: int, k: int) -> TopK:
        return cls(k, [], np.full((units, k), -np.inf, np.float32),
                   np.full((units, k), _EMPTY, np.int32), np.zeros((units, k, 2), np.int32))

    @classmethod
    def from_scores(
        cls, shas: Sequence[str], scores: np.ndarray, positions: np.ndarray, k: int,
        names: dict[str, str] | None = None,
    ) -> TopK:
        """From one batch: ``scores`` (N, C) and ``positions`` (N, C, 2) of photos ``shas``."""
        scores = np.asarray(scores, np.float32)
        n, c = scores.shape
        if len(shas) != n:
            raise ValueError(f"{len(shas)} photos for {n} rows of scores")
        table = sorted(set(shas))
        idx = np.searchsorted(table, list(shas)).astype(np.int32) if n else np.zeros(0, np.int32)
        photo = np.broadcast_to(idx[None, :], (c, n))
        return _select(k, table, scores.T, photo, np.asarray(positions, np.int32).transpose(1, 0, 2),
                       dict(names or {}))

    def merge(self, other: TopK) -> TopK:
        """The top-k of the union of both candidate sets (associative, idempotent)."""
        if self.units != other.units:
            raise ValueError(f"merging top-k of {self.units} and {other.units} units")
        if self.k == other.k:  # a side without candidates: the other is its own top-k already
            # (a map job's first batch and a layer's first absorbed batch: selecting again would
            # cost as much as the first selection, ≈ 20 ms at 1280 units)
            if not self.shas:
                return other
            if not other.shas:
                return self
        k = max(self.k, other.k)
        table = sorted(set(self.shas) | set(other.shas))
        parts = []
        for t in (self, other):
            remap = np.searchsorted(table, t.shas).astype(np.int32) if t.shas else np.zeros(0, np.int32)
            photo = np.where(t.photo >= 0, remap[np.clip(t.photo, 0, None)] if t.shas else _EMPTY,
                             _EMPTY).astype(np.int32)
            parts.append((t.score, photo, t.pos))
        names = {**other.names, **self.names}
        return _select(k, table, np.concatenate([p[0] for p in parts], axis=1),
                       np.concatenate([p[1] for p in parts], axis=1),
                       np.concatenate([p[2] for p in parts], axis=1), names)

    def candidates(self, unit: int) -> list[Candidate]:
        out = []
        for j in range(self.k):
            p = int(self.photo[unit, j])
            if p < 0:
                break
            out.append(Candidate(self.shas[p], (int(self.pos[unit, j, 0]), int(self.pos[unit, j, 1])),
                                 float(self.score[unit, j])))
        return out

    def key(self) -> list[list[tuple[str, int, int, float]]]:
        """Every unit's ranked (sha256, row, column, score): equal keys = equal top-k."""
        return [[(c.image_sha256, *c.position, c.score) for c in self.candidates(u)]
                for u in range(self.units)]

    def to_json(self) -> dict[str, Any]:
        units = []
        for u in range(self.units):
            row = []
            for j in range(self.k):
                p = int(self.photo[u, j])
                if p < 0:
                    break
                row.append([float(self.score[u, j]), p, int(self.pos[u, j, 0]), int(self.pos[u, j, 1])])
            units.append(row)
        names = {s: self.names[s] for s in self.shas if s in self.names}
        return {"k": self.k, "shas": self.shas, "units": units, "names": names}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TopK:
        k, units = int(d["k"]), d["units"]
        t = cls.empty(len(units), k)
        t.shas = list(d["shas"])
        t.names = dict(d.get("names", {}))
        lens = np.array([min(len(row), k) for row in units], np.int64)
        flat = [c for row in units for c in row[:k]]
        if not flat:
            return t
        arr = np.asarray(flat, np.float64)
        u = np.repeat(np.arange(len(units)), lens)
        j = np.arange(len(flat)) - np.repeat(np.cumsum(lens) - lens, lens)
        t.score[u, j] = arr[:, 0]
        t.photo[u, j] = arr[:, 1].astype(np.int32)
        t.pos[u, j, 0], t.pos[u, j, 1] = arr[:, 2].astype(np.int32), arr[:, 3].astype(np.int32)
        return t


def _select(
    k: int, table: list[str], score: np.ndarray, photo: np.ndarray, pos: np.ndarray,
    names: dict[str, str],
) -> TopK:
    """Per unit: one candidate per photo (its best), then the best ``k``; the table is pruned."""
    c, m = score.shape
    score = np.where(np.isnan(score), -np.inf, score).astype(np.float32)
    unit = np.broadcast_to(np.arange(c)[:, None], (c, m)).ravel()
    s, p = score.ravel(), photo.ravel().astype(np.int64)
    y, x = pos[..., 0].ravel(), pos[..., 1].ravel()
    ok = p >= 0
    unit, s, p, y, x = unit[ok], s[ok], p[ok], y[ok], x[ok]
    # the best candidate of each (unit, photo): sort by unit, photo, score desc, position
    order = np.lexsort((x, y, -s, p, unit))
    unit, s, p, y, x = unit[order], s[order], p[order], y[order], x[order]
    first = np.ones(len(unit), bool)
    first[1:] = (unit[1:] != unit[:-1]) | (p[1:] != p[:-1])
    unit, s, p, y, x = unit[first], s[first], p[first], y[first], x[first]
    # rank within each unit: score desc, sha (table order), position
    order = np.lexsort((x, y, p, -s, unit))
    unit, s, p, y, x = unit[order], s[order], p[order], y[order], x[order]
    starts = np.searchsorted(unit, np.arange(c))
    rank = np.arange(len(unit)) - starts[unit]
    keep = rank < k
    unit, s, p, y, x, rank = unit[keep], s[keep], p[keep], y[keep], x[keep], rank[keep]
    used = np.unique(p)
    new_table = [table[i] for i in used]
    remap = np.full(len(table), _EMPTY, np.int64)
    remap[used] = np.arange(len(used))
    out = TopK.empty(c, k)
    out.shas = new_table
    out.score[unit, rank] = s
    out.photo[unit, rank] = remap[p]
    out.pos[unit, rank, 0], out.pos[unit, rank, 1] = y, x
    out.names = {sha: names[sha] for sha in new_table if sha in names}
    return out
