"""Grid geometry: 8×8 tiles, 5 px black margins, row-major order, black where tiles are missing."""

from __future__ import annotations

import numpy as np
import pytest

from convatlas.shared.render import assemble_grid, grid_size, tile_origin


def test_book_geometry() -> None:
    assert grid_size(64) == 547 and grid_size(32) == 291
    assert tile_origin(0) == (0, 0) and tile_origin(1) == (0, 69) and tile_origin(8) == (69, 0)
    assert tile_origin(63) == (7 * 69, 7 * 69)


def test_tiles_land_row_major_on_black() -> None:
    tiles = {i: np.full((64, 64, 3), i + 1, np.uint8) for i in range(0, 64, 3)}
    grid = assemble_grid(tiles)
    assert grid.shape == (547, 547, 3)
    for pos in range(64):
        top, left = tile_origin(pos)
        block = grid[top : top + 64, left : left + 64]
        assert (block == (pos + 1 if pos in tiles else 0)).all()
    margins = grid.copy()
    for pos in range(64):
        top, left = tile_origin(pos)
        margins[top : top + 64, left : left + 64] = 0
    assert (margins == 0).all()


def test_bad_tiles_are_refused() -> None:
    with pytest.raises(ValueError):
        assemble_grid({64: np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(ValueError):
        assemble_grid({0: np.zeros((32, 32, 3), np.uint8)})
