"""Top-down raster of the Avoid task for pixel experiments (NumPy only).

The view is the square x in [0.1, 0.9], y in [-0.33, 0.47] (metres, raw TCP coordinates), with +y (the
direction of travel) pointing up: image row 0 is y = 0.47, column 0 is x = 0.1. Drawn: the allowed corridor
x in [0.2, 0.8] (light) against the penalised outside (dark), the finish line y = 0.4 (green), the six
pillars (blue disks of their collision radius) and the robot's TCP (red dot). Pillar geometry comes from
``dppo.envs.avoid``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dppo.envs.avoid import COLLISION_DIST, FINISH_Y, PILLAR_XY, X_BOUNDS

VIEW_X = (0.1, 0.9)
VIEW_Y = (-0.33, 0.47)
DOT_RADIUS = 0.015  # metres (drawn at least one pixel wide)

CORRIDOR = (225, 225, 225)
OUTSIDE = (120, 120, 120)
FINISH = (0, 170, 0)
PILLAR = (30, 60, 200)
ROBOT = (220, 30, 30)


def pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    """World (x, y) of every pixel centre, each (size, size) indexed [row, col]."""
    u = (np.arange(size) + 0.5) / size
    xs = VIEW_X[0] + u * (VIEW_X[1] - VIEW_X[0])
    ys = VIEW_Y[1] - u * (VIEW_Y[1] - VIEW_Y[0])
    return np.meshgrid(xs, ys)  # x varies along columns, y along rows


def world_to_pixel(xy: np.ndarray, size: int) -> np.ndarray:
    """(..., 2) world xy -> (..., 2) float (row, col) pixel coordinates (pixel centres at k + 0.5)."""
    xy = np.asarray(xy, dtype=np.float64)
    col = (xy[..., 0] - VIEW_X[0]) / (VIEW_X[1] - VIEW_X[0]) * size
    row = (VIEW_Y[1] - xy[..., 1]) / (VIEW_Y[1] - VIEW_Y[0]) * size
    return np.stack([row, col], axis=-1)


@lru_cache(maxsize=8)
def _background(size: int) -> np.ndarray:
    """The static scene (H, W, 3) uint8."""
    px = (VIEW_X[1] - VIEW_X[0]) / size  # metres per pixel
    x, y = pixel_centres(size)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = CORRIDOR
    img[(x < X_BOUNDS[0]) | (x > X_BOUNDS[1])] = OUTSIDE
    img[np.abs(y - FINISH_Y) <= 0.5 * px] = FINISH
    for (cx, cy), r in zip(PILLAR_XY, COLLISION_DIST):
        img[np.hypot(x - cx, y - cy) <= max(r, 0.75 * px)] = PILLAR
    img.setflags(write=False)
    return img


def render_avoid_topdown(xy_tcp: np.ndarray, size: int = 32) -> np.ndarray:
    """Render a batch of TCP positions (B, 2) (raw metres) as uint8 images (B, 3, size, size)."""
    xy = np.asarray(xy_tcp, dtype=np.float64).reshape(-1, 2)
    px = (VIEW_X[1] - VIEW_X[0]) / size
    x, y = pixel_centres(size)
    dot = np.hypot(x[None] - xy[:, 0, None, None], y[None] - xy[:, 1, None, None]) <= max(DOT_RADIUS, 0.75 * px)
    img = np.repeat(_background(size)[None], len(xy), axis=0)
    img[dot] = ROBOT
    return np.ascontiguousarray(img.transpose(0, 3, 1, 2))
