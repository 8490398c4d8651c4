"""The npz dataset format shared with the reference: read with checks, write from trajectories.

``train.npz`` holds ``states`` (N, D_o), ``actions`` (N, D_a), ``traj_lengths`` (n,), optionally ``images``
(N, C, H, W) with 0-255 values, ``rewards`` (N,) and ``terminals`` (N,); trajectories are stored back to back
and already normalised to [-1, 1]. ``normalization.npz`` beside it holds the min/max used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dppo.data.normalization import DatasetError, Normalization, minmax, normalize, warn_degenerate

REQUIRED = ("states", "actions", "traj_lengths")
OPTIONAL = ("images", "rewards", "terminals")

__all__ = ["DatasetError", "load_npz", "write_dataset"]


def load_npz(path: str | Path, obs_dim: int | None = None, action_dim: int | None = None,
             use_img: bool = False) -> dict[str, np.ndarray]:
    """Load and validate a ``train.npz``; every problem raises one :class:`DatasetError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset {path} does not exist (make it with `dppo data ...`, see README)")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # corrupt or truncated zip, pickled object arrays, not an npz, ...
        raise DatasetError(f"dataset {path} could not be read as npz: {e}") from e
    missing = [k for k in REQUIRED + (("images",) if use_img else ()) if k not in data]
    if missing:
        raise DatasetError(f"dataset {path} lacks array(s) {missing}; it has {sorted(data)}")
    for key in REQUIRED + OPTIONAL:
        if key in data and (data[key].dtype.kind not in "iufb" or data[key].ndim == 0):
            raise DatasetError(f"dataset {path}: '{key}' must be a numeric array with one row per step, got "
                               f"{data[key].dtype} of shape {data[key].shape}")
    states, actions, lengths = data["states"], data["actions"], data["traj_lengths"]
    if states.ndim != 2 or actions.ndim != 2:
        raise DatasetError(f"dataset {path}: 'states' and 'actions' must be 2-D (N, dim), got "
                           f"{states.shape} and {actions.shape}")
    if (lengths.ndim != 1 or len(lengths) == 0 or lengths.dtype.kind == "b"
            or not np.isfinite(lengths).all() or (lengths <= 0).any() or (lengths != np.round(lengths)).any()):
        raise DatasetError(f"dataset {path}: 'traj_lengths' must be a non-empty 1-D array of positive integer "
                           f"lengths, got {lengths.dtype} {lengths.shape}")
    if (lengths > len(states)).any():
        raise DatasetError(f"dataset {path}: a trajectory length ({int(lengths.max())}) exceeds the "
                           f"{len(states)} rows of 'states'")
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    for key in REQUIRED[:2] + OPTIONAL:
        if key in data and len(data[key]) != total:
            raise DatasetError(f"dataset {path}: '{key}' has {len(data[key])} rows but traj_lengths sums to "
                               f"{total}")
    if obs_dim is not None and states.shape[1] != obs_dim:
        raise DatasetError(f"dataset {path}: states have dim {states.shape[1]}, config obs_dim is {obs_dim}")
    if action_dim is not None and actions.shape[1] != action_dim:
        raise DatasetError(f"dataset {path}: actions have dim {actions.shape[1]}, config action_dim is "
                           f"{action_dim}")
    if states.shape[1] == 0 or actions.shape[1] == 0:
        raise DatasetError(f"dataset {path}: 'states' and 'actions' need at least one dimension, got "
                           f"{states.shape} and {actions.shape}")
    for key in ("states", "actions") + (("images",) if use_img else ()):
        if data[key].dtype.kind == "f" and not np.isfinite(data[key]).all():
            bad = np.argwhere(~np.isfinite(data[key]))[0]
            raise DatasetError(f"dataset {path}: '{key}' contains NaN/inf (first at row {bad[0]})")
    if use_img and data["images"].ndim != 4:
        raise DatasetError(f"dataset {path}: 'images' must be (N, C, H, W), got {data['images'].shape}")
    data["states"] = states.astype(np.float32)
    data["actions"] = actions.astype(np.float32)
    data["traj_lengths"] = lengths
    return data


def write_dataset(out_dir: str | Path, trajectories: Sequence[dict[str, np.ndarray]],
                  include_zero: bool = False, normalization: Normalization | None = None) -> Path:
    """Normalise raw trajectories and write ``train.npz`` + ``normalization.npz`` into ``out_dir``.

    Each trajectory is a dict with raw ``states`` (T, D_o) and ``actions`` (T, D_a), optionally ``images``
    (T, C, H, W) uint8, ``rewards`` (T,) and ``terminals`` (T,). The min/max come from all trajectories
    (``include_zero`` reproduces the reference's zero-initialised running min/max) unless given.
    """
    if not trajectories:
        raise ValueError("write_dataset needs at least one trajectory")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cat = {k: np.concatenate([t[k] for t in trajectories]) for k in trajectories[0]}
    if normalization is None:
        normalization = Normalization(*minmax(cat["states"], include_zero), *minmax(cat["actions"], include_zero))
        warn_degenerate(f"dataset {out / 'train.npz'}", normalization.obs_min, normalization.obs_max, "obs")
        warn_degenerate(f"dataset {out / 'train.npz'}", normalization.action_min, normalization.action_max,
                        "action")
    arrays = {
        "states": normalize(cat["states"], normalization.obs_min, normalization.obs_max).astype(np.float32),
        "actions": normalize(cat["actions"], normalization.action_min, normalization.action_max).astype(
            np.float32),
        "traj_lengths": np.array([len(t["actions"]) for t in trajectories], dtype=np.int64),
    }
    if "images" in cat:
        arrays["images"] = cat["images"].astype(np.uint8)
    for key in ("rewards", "terminals"):
        if key in cat:
            arrays[key] = cat[key]
    np.savez_compressed(out / "train.npz", **arrays)
    normalization.save(out / "normalization.npz")
    return out / "train.npz"
