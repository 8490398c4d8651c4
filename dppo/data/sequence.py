"""Sliding windows over stitched trajectories (the reference's StitchedSequenceDataset) and a tf.data pipeline over them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dppo.data.npz import DatasetError, load_npz


def window_indices(traj_lengths: np.ndarray, horizon_steps: int) -> np.ndarray:
    """(start, offset-in-episode) for every window of ``horizon_steps`` actions inside one trajectory."""
    out, offset = [], 0
    for length in np.asarray(traj_lengths, dtype=np.int64):
        starts = np.arange(offset, offset + length - horizon_steps + 1)
        out.append(np.stack([starts, starts - offset], axis=1))
        offset += length
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)


def history_indices(indices: np.ndarray, steps: int) -> np.ndarray:
    """Rows of the ``steps`` most recent states ending at each start, oldest first, repeat-padded at the
    episode start: (n, steps)."""
    start, offset = indices[:, :1], indices[:, 1:]
    lags = np.arange(steps - 1, -1, -1)[None, :]
    return start - np.minimum(lags, offset)


class StitchedSequenceDataset:
    """Windows of ``horizon_steps`` actions conditioned on ``cond_steps`` observations."""

    def __init__(self, dataset_path: str | Path, horizon_steps: int = 64, cond_steps: int = 1,
                 img_cond_steps: int = 1, max_n_episodes: int = 10000, use_img: bool = False,
                 obs_dim: int | None = None, action_dim: int | None = None, device: Any = None):
        if img_cond_steps > cond_steps:
            raise ValueError(f"img_cond_steps ({img_cond_steps}) must be <= cond_steps ({cond_steps})")
        data = load_npz(dataset_path, obs_dim, action_dim, use_img)
        lengths = data["traj_lengths"][:max_n_episodes]
        total = int(lengths.sum())
        self.path = Path(dataset_path)
        self.horizon_steps, self.cond_steps, self.img_cond_steps = horizon_steps, cond_steps, img_cond_steps
        self.states = data["states"][:total]
        self.actions = data["actions"][:total]
        self.images = data["images"][:total] if use_img else None
        self.traj_lengths = lengths
        self.indices = window_indices(lengths, horizon_steps)
        if len(self.indices) == 0:
            raise DatasetError(f"dataset {dataset_path}: no trajectory is as long as horizon_steps={horizon_steps} "
                               f"(longest: {int(lengths.max()) if len(lengths) else 0})")
        self.state_rows = history_indices(self.indices, cond_steps)
        self.image_rows = history_indices(self.indices, img_cond_steps)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        start = self.indices[i, 0]
        cond = {"state": self.states[self.state_rows[i]]}
        if self.images is not None:
            cond["rgb"] = self.images[self.image_rows[i]]
        return self.actions[start:start + self.horizon_steps], cond

    def _tensors(self) -> dict[str, tf.Tensor]:
        if not hasattr(self, "_cache"):
            with tf.init_scope():  # eager constants, even when first called while tracing a tf.function
                self._cache = self._make_tensors()
        return self._cache

    def _make_tensors(self) -> dict[str, tf.Tensor]:
        cache = {
            "actions": tf.constant(self.actions), "states": tf.constant(self.states),
            "action_rows": tf.constant(self.indices[:, :1] + np.arange(self.horizon_steps)[None, :]),
            "state_rows": tf.constant(self.state_rows), "image_rows": tf.constant(self.image_rows),
        }
        if self.images is not None:
            cache["images"] = tf.constant(self.images)
        return cache

    def gather(self, idx: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """The windows ``idx`` as tensors (usable inside tf.function): actions (B, T_p, D_a) and cond."""
        c = self._tensors()
        cond = {"state": tf.gather(c["states"], tf.gather(c["state_rows"], idx))}
        if "images" in c:
            cond["rgb"] = tf.cast(tf.gather(c["images"], tf.gather(c["image_rows"], idx)), tf.float32)
        return tf.gather(c["actions"], tf.gather(c["action_rows"], idx)), cond

    def permutation(self, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).permutation(len(self))

    def as_tf_dataset(self, batch_size: int, shuffle: bool = True, seed: int = 0) -> tf.data.Dataset:
        """One pass of batches (actions (B, T_p, D_a), {"state": (B, T_o, D_o)[, "rgb": (B, T_img, C, H, W)]}).

        The arrays stay in memory as tensors and each batch is gathered by window index; the order is a
        permutation drawn from ``seed`` (so a resumed run replays the same epochs), last batch kept.
        """
        order = self.permutation(seed) if shuffle else np.arange(len(self))
        ds = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return ds.map(self.gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
