"""The order the dataset-examples pass breaks arg-max ties in, the same for every backend.

On ties (a constant map, saturated activations) the position is the first maximum in a fixed
order: row-major, by ``block``×``block`` blocks on big maps (blocks in row-major order, row-major
inside a block), so (0, 0) for a constant map. Blocks let a backend search a pooled map first,
then read only the winning block (``tf_maxima``); every backend uses the same blocks so that the
positions, not only the scores, agree.
"""

from __future__ import annotations


def argmax_block(h: int, w: int) -> int:
    """Side of the blocks the arg-max is searched by on an ``h``×``w`` map (1: no blocks)."""
    for b, area in ((4, 56 * 56), (2, 28 * 28)):
        if h * w >= area and h % b == 0 and w % b == 0:
            return b
    return 1
