"""The replay buffer of every off-policy runner (SAC and the diffusion baselines DIPO, DQL, QSM, IDQL).

A fixed-capacity ring of named NumPy arrays, one row per transition: ``obs`` (T_o, D_o), ``actions`` (the
executed chunk, T_a, D_a), ``rewards`` (scaled), ``next_obs`` (the episode's final observation when the step was
truncated and the env reset itself) and ``terminated``. Rows are appended in order and the oldest is overwritten
when the buffer is full (FIFO). Files written by :meth:`ReplayBuffer.save` (npz, atomic) hold the filled rows, the
write pointer and the state of the minibatch sampler, so a resumed run draws the same minibatches.

Two ways to sample:

* :meth:`ReplayBuffer.sample` with a NumPy generator (SAC: one minibatch per compiled update call);
* :meth:`ReplayBuffer.graph`, a :class:`GraphReplay` holding the buffer as ``tf.Variable``s, for compiled updates
  that run many minibatches in one call: ``GraphReplay.sample`` draws indices with replacement from the buffer's
  ``tf_stream(seed, "replay")`` generator inside the graph, and ``GraphReplay.write`` lets an update rewrite rows
  (DIPO's improved actions). :meth:`ReplayBuffer.push` copies the rows added since the last push into the
  variables; :meth:`ReplayBuffer.pull` copies rewritten fields back into the NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dppo.utils import checkpoint as ckpt
from dppo.utils.seeding import tf_stream

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


class ReplayBuffer:
    """Ring buffer of (obs, actions, rewards, next_obs, terminated) rows; ``capacity`` transitions."""

    FIELDS = FIELDS

    def __init__(self, capacity: int, obs_shape: Sequence[int], action_shape: Sequence[int], seed: int = 0):
        if int(capacity) < 1:
            raise ValueError(f"buffer_size must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        shapes = {"obs": tuple(obs_shape), "actions": tuple(action_shape), "rewards": (),
                  "next_obs": tuple(obs_shape), "terminated": ()}
        self.data: dict[str, np.ndarray] = {k: np.zeros((self.capacity, *shapes[k]), np.float32) for k in FIELDS}
        self.ptr = 0  # next row to write
        self.size = 0
        self.sampler = tf_stream(seed, "replay")  # in-graph minibatch indices (GraphReplay.sample)
        self._graph: GraphReplay | None = None
        self._pending: list[np.ndarray] = []  # rows written since the last push

    def __getattr__(self, name: str) -> np.ndarray:
        data = self.__dict__.get("data")
        if data is not None and name in data:
            return data[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        return self.size

    # writing ------------------------------------------------------------------------------------------
    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray) -> np.ndarray:
        """Append a batch of rows (leading axis = transitions, oldest first), overwriting the oldest rows when
        full; returns the row indices written."""
        n = len(rewards)
        if n > self.capacity:  # only the newest capacity rows survive
            cut = n - self.capacity
            return self.add(obs[cut:], actions[cut:], rewards[cut:], next_obs[cut:], terminated[cut:])
        idx = (self.ptr + np.arange(n)) % self.capacity
        for k, v in zip(FIELDS, (obs, actions, rewards, next_obs, terminated)):
            self.data[k][idx] = v
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))
        self._pending.append(idx)
        return idx

    # NumPy sampling -----------------------------------------------------------------------------------
    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``batch_size`` uniform rows (with replacement) as (obs, actions, rewards, next_obs, terminated)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, batch_size)
        return tuple(self.data[k][idx] for k in FIELDS)

    # graph view ---------------------------------------------------------------------------------------
    def graph(self) -> GraphReplay:
        """The buffer as variables for compiled updates (made on first use; call :meth:`push` after adding)."""
        if self._graph is None:
            self._graph = GraphReplay(self)
            self._pending = [np.arange(self.size)]
        return self._graph

    def push(self) -> GraphReplay:
        """Copy the rows added since the last push (all rows the first time) into the graph view."""
        view = self.graph()
        if self._pending:
            idx = np.unique(np.concatenate(self._pending))
            if len(idx):
                for k in FIELDS:
                    view.vars[k].scatter_nd_update(tf.constant(idx[:, None], tf.int64),
                                                   tf.constant(self.data[k][idx]))
            self._pending = []
        view.size.assign(self.size)
        return view

    def pull(self, names: Sequence[str]) -> None:
        """Copy fields an update rewrote in the graph view back into the NumPy arrays."""
        if self._graph is None:
            return
        for k in names:
            self.data[k][: self.size] = self._graph.vars[k][: self.size].numpy()

    # files --------------------------------------------------------------------------------------------
    def save(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the filled rows, the write pointer, the sampler state and ``extra`` scalars atomically."""
        arrays = {k: self.data[k][: self.size] for k in FIELDS}
        arrays.update(ptr=np.asarray(self.ptr), size=np.asarray(self.size), capacity=np.asarray(self.capacity),
                      sampler=self.sampler.state.numpy())
        arrays.update({f"extra/{k}": np.asarray(v) for k, v in (extra or {}).items()})
        return ckpt.write_npz_atomic(path, arrays)

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore rows, pointer and sampler from :meth:`save`'s file; returns its ``extra`` values."""
        with np.load(path, allow_pickle=False) as f:
            size = int(f["size"])
            if size > self.capacity:
                raise ValueError(f"replay buffer file {path} holds {size} rows but buffer_size is {self.capacity}")
            for k in FIELDS:
                rows = f[k]
                if rows.shape[1:] != self.data[k].shape[1:] or len(rows) != size:
                    raise ValueError(f"replay buffer file {path}: '{k}' rows have shape {rows.shape}, expected "
                                     f"({size}, {', '.join(map(str, self.data[k].shape[1:]))})")
                self.data[k][:size] = rows
            self.size = size
            self.ptr = int(f["ptr"]) if int(f["capacity"]) == self.capacity else size % self.capacity
            if "sampler" in f.files:
                self.sampler.reset(f["sampler"].astype(self.sampler.state.dtype.as_numpy_dtype))
            self._pending = [np.arange(size)]
            return {k[len("extra/"):]: f[k].item() for k in f.files if k.startswith("extra/")}


class GraphReplay(tf.Module):
    """The buffer's rows as full-capacity variables plus the filled size, sampled inside compiled updates."""

    def __init__(self, buffer: ReplayBuffer):
        super().__init__(name="replay")
        self.vars = {k: tf.Variable(tf.zeros_like(v), trainable=False, name=k) for k, v in buffer.data.items()}
        self.size = tf.Variable(0, dtype=tf.int32, trainable=False, name="size")
        self.sampler = buffer.sampler

    def sample(self, batch_size: int) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """``batch_size`` row indices drawn uniformly with replacement from the filled rows, and those rows."""
        idx = self.sampler.uniform((batch_size,), 0, self.size, dtype=tf.int32)
        return idx, {k: tf.gather(v, idx) for k, v in self.vars.items()}

    def write(self, name: str, idx: tf.Tensor, values: tf.Tensor) -> None:
        """Overwrite rows ``idx`` of field ``name`` (read back into NumPy by :meth:`ReplayBuffer.pull`)."""
        self.vars[name].scatter_nd_update(tf.expand_dims(idx, -1), values)
