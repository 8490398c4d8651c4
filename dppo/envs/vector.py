"""A synchronous vector env for the reference's semantics: no auto-reset (the multi-step wrapper resets within a
step when configured; the runner resets at iterations), dict observations stacked per key, and the per-env
infos the runners read (``final_obs``, ``full_obs``) stacked with a ``_<key>`` mask, as gymnasium does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np


def stack_obs(items: Sequence[Any]) -> Any:
    if isinstance(items[0], dict):
        return {k: np.stack([o[k] for o in items]) for k in items[0]}
    return np.stack(items)


class SyncVectorEnv:
    """``n`` envs stepped one after another in this process."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]):
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space

    def reset(self, seed: int | None = None, options: dict | Sequence[dict] | None = None):
        """Reset every env (env i with ``seed + i``); ``options`` is one dict for all envs or one per env
        (e.g. a ``video_path`` for the first few)."""
        per_env = options if isinstance(options, Sequence) else [options] * self.num_envs
        out = [env.reset(seed=None if seed is None else seed + i, options=o)
               for i, (env, o) in enumerate(zip(self.envs, per_env, strict=True))]
        return stack_obs([o for o, _ in out]), {}

    def step(self, actions: np.ndarray):
        results = [env.step(a) for env, a in zip(self.envs, actions)]
        obs = stack_obs([r[0] for r in results])
        rewards = np.array([r[1] for r in results], np.float32)
        terminated = np.array([r[2] for r in results], bool)
        truncated = np.array([r[3] for r in results], bool)
        return obs, rewards, terminated, truncated, self._infos([r[4] for r in results])

    def _infos(self, infos: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("final_obs", "full_obs"):
            mask = np.array([key in i for i in infos])
            if not mask.any():
                continue
            template = infos[int(np.argmax(mask))][key]  # rows without the key repeat a valid one (masked out)
            out[key] = stack_obs([infos[i][key] if mask[i] else template for i in range(self.num_envs)])
            out[f"_{key}"] = mask
        return out

    def call(self, name: str, *args, **kwargs) -> list[Any]:
        return [getattr(env, name)(*args, **kwargs) for env in self.envs]

    def close(self) -> None:
        for env in self.envs:
            env.close()
