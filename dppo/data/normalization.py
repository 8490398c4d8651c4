"""Min/max normalisation to [-1, 1], as in the reference's processing scripts and env wrappers.

A dimension whose range is zero (max == min: constant in the data, e.g. a fixed coordinate) is allowed, as in
the reference: the 1e-6 in the denominator maps its constant to -1 in the data and in the env alike. But an env
value off that constant is then scaled by up to 2e6, so loading such a file warns once, naming the file and the
dimensions. A file with max < min, non-finite values or mismatched shapes is refused (:class:`DatasetError`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dppo.utils.errors import DatasetError  # noqa: F401 (re-exported: the dataset format's error)
from dppo.utils.validate import ConfigError, get

log = logging.getLogger(__name__)

EPS = 1e-6
KEYS = ("obs_min", "obs_max", "action_min", "action_max")
_warned: set[str] = set()  # files already warned about in this process (every env of a vector env loads it)


def degenerate_dims(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices of the dimensions whose range (hi - lo) is below the 1e-6 the normalisation adds to it."""
    return np.flatnonzero(np.asarray(hi, np.float64) - np.asarray(lo, np.float64) < EPS)


def warn_degenerate(where: str, lo: np.ndarray, hi: np.ndarray, what: str) -> None:
    dims = degenerate_dims(lo, hi)
    if len(dims):
        values = ", ".join(f"{i}: {float(lo[i]):.6g}" for i in dims[:8]) + (", ..." if len(dims) > 8 else "")
        log.warning("%s: %s dimension(s) %s have max - min < %g (constant {%s}); they normalise to -1, and a live "
                    "value off that constant is scaled by up to %.0e - fine for a truly fixed dimension, otherwise "
                    "recompute the normalisation from more varied data", where, what, dims.tolist(), EPS, values,
                    2 / EPS)


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
        """Read and check ``normalization.npz``; any problem raises one :class:`DatasetError` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"normalization file {path} does not exist (it is written next to train.npz by "
                               f"`dppo data ...`)")
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in KEYS if k not in f.files]
                if missing:
                    raise DatasetError(f"normalization file {path} lacks {missing}; expected keys {list(KEYS)}")
                arrays = {k: f[k] for k in KEYS}
        except DatasetError:
            raise
        except Exception as e:  # truncated or corrupt file, pickled arrays, ...
            raise DatasetError(f"normalization file {path} could not be read as npz: {e}") from e
        for key, value in arrays.items():
            if value.ndim != 1 or value.dtype.kind not in "iuf" or len(value) == 0:
                raise DatasetError(f"normalization file {path}: '{key}' must be a non-empty 1-D numeric array, got "
                                   f"{value.dtype} {value.shape}")
            if not np.isfinite(value).all():
                raise DatasetError(f"normalization file {path}: '{key}' contains NaN or inf (dimension "
                                   f"{int(np.flatnonzero(~np.isfinite(value))[0])})")
        norm = cls(*(arrays[k].astype(np.float32) for k in KEYS))
        for what in ("obs", "action"):
            lo, hi = getattr(norm, f"{what}_min"), getattr(norm, f"{what}_max")
            if lo.shape != hi.shape:
                raise DatasetError(f"normalization file {path}: {what}_min has shape {lo.shape} but {what}_max "
                                   f"{hi.shape}")
            if (hi < lo).any():
                i = int(np.flatnonzero(hi < lo)[0])
                raise DatasetError(f"normalization file {path}: {what} dimension {i} has max {hi[i]} < min {lo[i]}")
            if str(path) not in _warned and len(degenerate_dims(lo, hi)):
                warn_degenerate(f"normalization file {path}", lo, hi, what)
        _warned.add(str(path))
        return norm

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


def check_normalization_dims(cfg: Any, obs_dim_key: str = "obs_dim", action_dim_key: str = "action_dim") -> None:
    """The normalisation file named by ``normalization_path`` must fit ``obs_dim`` and ``action_dim``."""
    path = get(cfg, "normalization_path")
    if not path:
        return
    norm = Normalization.load(path)
    for attr, key in (("obs_min", obs_dim_key), ("action_min", action_dim_key)):
        want = get(cfg, key)
        if want is not None and getattr(norm, attr).shape[-1] != int(want):
            raise ConfigError(f"{key}: the config says {want} but normalization_path {path} has "
                              f"{attr[:-4]} dim {getattr(norm, attr).shape[-1]}")
