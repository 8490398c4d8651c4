"""Two halves of a run's envs, so that the rollout can step one half while the policy samples for the other.

``env.overlap: true`` (default false) makes the factory build the run's ``n_envs`` envs as two vector envs of
``n_envs // 2`` and ``n_envs - n_envs // 2`` (env i keeps seed + i) behind :class:`SplitVectorEnv`, which has the
ordinary vector env contract (stepping it steps both halves in turn) plus ``halves`` and a one-thread
``executor``. :func:`dppo.runners.rollout.rollout` then pipelines them: half A's env step runs in the worker thread
while the policy samples for half B, and B's step while it samples for A's next step. The policy samples twice
per step at half the batch, so the actions differ from the unsplit run's (same distribution, same seed ->
same run). Measured in benchmarks/results.md ("overlap"): faster with the gymnasium envs (their step is mostly
Python and MuJoCo, both free to run beside TensorFlow's graph), slower with EnvPool (its step is already short,
and two half-batch sampler calls cost more than one full one).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from dppo.envs.vector import VectorEnv, concat_obs, merge_infos


def _part_seed(seed: int | Sequence[int | None] | None, start: int, n: int) -> int | list[int | None] | None:
    """The reset seed of the group of ``n`` envs from env ``start``: ``seed + start``, or its slice of a list."""
    if seed is None or not isinstance(seed, Sequence):
        return None if seed is None else int(seed) + start
    return list(seed[start:start + n])


class SplitVectorEnv(VectorEnv):
    """Vector envs run as consecutive groups of envs (see the module docstring)."""

    def __init__(self, halves: Sequence[Any]):
        self.halves = list(halves)
        self.sizes = [h.num_envs for h in self.halves]
        self._declare(int(sum(self.sizes)), self.halves[0].single_observation_space,
                      self.halves[0].single_action_space, self.halves[0].metadata["autoreset_mode"])
        self.offsets = np.cumsum([0, *self.sizes])
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="env-step")

    def reset(self, seed: int | Sequence[int | None] | None = None, options: dict | Sequence[dict] | None = None):
        out = []
        for h, start in zip(self.halves, self.offsets):
            opts = options[start:start + h.num_envs] if isinstance(options, Sequence) else options
            out.append(h.reset(seed=_part_seed(seed, int(start), h.num_envs), options=opts))
        return concat_obs([o for o, _ in out]), merge_infos([i for _, i in out], self.sizes)

    def step(self, actions: np.ndarray):
        results = [h.step(actions[a:b]) for h, a, b in zip(self.halves, self.offsets[:-1], self.offsets[1:])]
        return (concat_obs([r[0] for r in results]), *(np.concatenate([r[k] for r in results]) for k in (1, 2, 3)),
                merge_infos([r[4] for r in results], self.sizes))

    def call(self, name: str, *args, **kwargs) -> list[Any]:
        return [x for h in self.halves for x in h.call(name, *args, **kwargs)]

    def close_extras(self, **kwargs: Any) -> None:
        for h in self.halves:
            h.close()
        self.executor.shutdown(wait=False)
