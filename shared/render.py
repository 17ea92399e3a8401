"""Pictures: the 8×8 filter grid and the Grad-CAM colour map and overlay."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

GRID = 8
MARGIN = 5


def grid_size(tile: int = 64, n: int = GRID, margin: int = MARGIN) -> int:
    return n * tile + (n - 1) * margin


def tile_origin(position: int, tile: int = 64, n: int = GRID, margin: int = MARGIN) -> tuple[int, int]:
    """(top, left) pixel of a tile; row-major: position = row·8 + col."""
    row, col = divmod(position, n)
    return row * (tile + margin), col * (tile + margin)


def assemble_grid(
    tiles: Mapping[int, np.ndarray], tile: int = 64, n: int = GRID, margin: int = MARGIN
) -> np.ndarray:
    """Place tiles (position → tile×tile×3 uint8) on black; missing positions stay black."""
    side = grid_size(tile, n, margin)
    canvas = np.zeros((side, side, 3), np.uint8)
    for pos, img in tiles.items():
        if not 0 <= pos < n * n:
            raise ValueError(f"tile position {pos} outside the {n}×{n} grid")
        if img.shape != (tile, tile, 3):
            raise ValueError(f"tile {pos} has shape {img.shape}, expected {(tile, tile, 3)}")
        top, left = tile_origin(pos, tile, n, margin)
        canvas[top : top + tile, left : left + tile] = img
    return canvas


def colorize(heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
    """Heatmap in [0,1] → JET colours (RGB uint8) resized to width×height."""
    up = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    u8 = np.uint8(np.clip(up, 0.0, 1.0) * 255.0 + 0.5)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, heatmap: np.ndarray, intensity: float = 0.4) -> np.ndarray:
    """The book's ``heatmap * 0.4 + img`` at the photo's size, clipped instead of overflowing."""
    h, w = image.shape[:2]
    colored = colorize(heatmap, w, h).astype(np.float32)
    return np.clip(colored * intensity + image.astype(np.float32), 0, 255).astype(np.uint8)
