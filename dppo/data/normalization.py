"""Min/max normalisation to [-1, 1], as in the reference's processing scripts and env wrappers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPS = 1e-6
KEYS = ("obs_min", "obs_max", "action_min", "action_max")


def normalize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map [lo, hi] to [-1, 1]: 2 * ((x - lo) / (hi - lo + 1e-6) - 0.5)."""
    return 2.0 * ((x - lo) / (hi - lo + EPS) - 0.5)


def unnormalize(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Inverse of the action scaling used by the env wrappers: (x + 1) / 2 * (hi - lo) + lo."""
    return (x + 1.0) / 2.0 * (hi - lo) + lo


def minmax(x: np.ndarray, include_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension min and max over the rows of ``x``.

    ``include_zero`` reproduces the reference's D3IL/robomimic scripts, whose running min/max start at 0
    (so 0 always lies inside the range) [quirk kept because it sets the published normalisation].
    """
    lo, hi = x.min(axis=0), x.max(axis=0)
    if include_zero:
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    return lo.astype(np.float32), hi.astype(np.float32)


@dataclass
class Normalization:
    """The four arrays of ``normalization.npz``."""

    obs_min: np.ndarray
    obs_max: np.ndarray
    action_min: np.ndarray
    action_max: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> Normalization:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"normalization file {path} does not exist")
        with np.load(path) as f:
            missing = [k for k in KEYS if k not in f]
            if missing:
                raise ValueError(f"normalization file {path} lacks {missing}; expected keys {list(KEYS)}")
            return cls(*(np.asarray(f[k], dtype=np.float32) for k in KEYS))

    def save(self, path: str | Path) -> None:
        np.savez(path, **{k: getattr(self, k) for k in KEYS})

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        return normalize(obs, self.obs_min, self.obs_max)

    def unnormalize_obs(self, obs: np.ndarray) -> np.ndarray:
        return unnormalize(obs, self.obs_min, self.obs_max)

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        return normalize(action, self.action_min, self.action_max)

    def unnormalize_action(self, action: np.ndarray) -> np.ndarray:
        return unnormalize(action, self.action_min, self.action_max)
