"""The vector-env contract every runner and data maker uses: gymnasium's ``VectorEnv`` with an explicit
autoreset mode (``metadata["autoreset_mode"]``).

* ``AutoresetMode.SAME_STEP``: an env whose episode ends (terminated or truncated) is reset inside that
  ``step``; the returned observation starts the next episode and the last observation of the ended one is in
  ``infos["final_obs"]`` (rows flagged by ``infos["_final_obs"]``). The reference's ``multi_step`` wrapper
  with ``reset_within_step: True`` does this per env; the vector env resets the envs that do not reset
  themselves.
* ``AutoresetMode.DISABLED``: nothing resets but ``reset()`` (the reference's configs with
  ``reset_within_step: False`` reset every iteration).

Observations are stacked per key for dict spaces; ``infos`` carries the per-env keys the runners read
(``final_obs``, ``full_obs``) stacked with a ``_<key>`` mask, as gymnasium does. :class:`SyncVectorEnv`
steps wrapped envs one after another in this process; a task may provide a batched subclass (Avoid's
``AvoidVectorEnv``) that computes the same numbers for all envs at once; :class:`dppo.envs.subproc.SubprocVectorEnv`
(``env.vector: subprocess``) steps blocks of the same envs as SyncVectorEnvs in worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

__all__ = ["AutoresetMode", "SyncVectorEnv", "VectorEnv", "concat_obs", "env_seeds", "merge_infos",
           "resets_within_step", "stack_obs"]


def stack_obs(items: Sequence[Any]) -> Any:
    if isinstance(items[0], dict):
        return {k: np.stack([o[k] for o in items]) for k in items[0]}
    return np.stack(items)


def concat_obs(parts: Sequence[Any]) -> Any:
    """Observations (arrays or dicts of arrays) of consecutive groups of envs as one batch."""
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def _rows(x: Any, idx: Any) -> Any:
    return {k: v[idx] for k, v in x.items()} if isinstance(x, dict) else x[idx]


def merge_infos(infos: Sequence[dict[str, Any]], sizes: Sequence[int]) -> dict[str, Any]:
    """The infos of consecutive groups of ``sizes`` envs as :class:`SyncVectorEnv` returns them for all envs at
    once: each key with its ``_key`` mask, and every masked-out row repeating the first valid row overall."""
    out: dict[str, Any] = {}
    starts = np.cumsum([0, *sizes])
    for key in dict.fromkeys(k for info in infos for k in info if not k.startswith("_")):
        mask = np.concatenate([np.asarray(info.get(f"_{key}", np.ones(n, bool))) if key in info
                               else np.zeros(n, bool) for info, n in zip(infos, sizes)])
        j = int(np.argmax(mask))  # the first valid row overall
        b = int(np.searchsorted(starts, j, side="right")) - 1
        first = _rows(infos[b][key], slice(j - starts[b], j - starts[b] + 1))
        merged = concat_obs([info[key] if key in info else _rows(first, np.zeros(n, int))
                             for info, n in zip(infos, sizes)])
        for v, row in (((merged[k], first[k]) for k in merged) if isinstance(merged, dict) else [(merged, first)]):
            v[~mask] = row[0]
        out[key], out[f"_{key}"] = merged, mask
    return out


def env_seeds(seed: int | Sequence[int | None] | None, n_envs: int) -> list[int | None]:
    """Per-env reset seeds: None for all, ``seed + i`` for an int, or a list of ``n_envs`` seeds as given."""
    if seed is None:
        return [None] * n_envs
    if isinstance(seed, Sequence):
        if len(seed) != n_envs:
            raise ValueError(f"reset got {len(seed)} seeds for {n_envs} envs")
        return list(seed)
    return [int(seed) + i for i in range(n_envs)]


def resets_within_step(env: gym.Env) -> bool:
    """Whether a wrapped env resets itself at episode end (a ``multi_step`` wrapper with ``reset_within_step``)."""
    while env is not None:
        if getattr(env, "reset_within_step", False):
            return True
        env = getattr(env, "env", None)
    return False


class VectorEnv(gym.vector.VectorEnv):
    """Base of the project's vector envs: spaces, ``num_envs`` and the declared autoreset mode."""

    def _declare(self, n_envs: int, single_observation_space: gym.Space, single_action_space: gym.Space,
                 autoreset_mode: AutoresetMode) -> None:
        self.num_envs = int(n_envs)
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(single_observation_space, self.num_envs)
        self.action_space = batch_space(single_action_space, self.num_envs)
        self.metadata = {**self.metadata, "autoreset_mode": AutoresetMode(autoreset_mode)}

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]


class SyncVectorEnv(VectorEnv):
    """``n`` wrapped envs stepped one after another in this process.

    ``autoreset_mode``: SAME_STEP or DISABLED (see the module docstring); None takes SAME_STEP when the envs
    reset themselves within a step and DISABLED otherwise.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], autoreset_mode: AutoresetMode | str | None = None):
        self.envs = [fn() for fn in env_fns]
        self_reset = resets_within_step(self.envs[0])
        if autoreset_mode is None:
            autoreset_mode = AutoresetMode.SAME_STEP if self_reset else AutoresetMode.DISABLED
        autoreset_mode = AutoresetMode(autoreset_mode)
        if autoreset_mode == AutoresetMode.NEXT_STEP:
            raise ValueError("SyncVectorEnv supports the autoreset modes SameStep and Disabled, not NextStep")
        if autoreset_mode == AutoresetMode.DISABLED and self_reset:
            raise ValueError("autoreset mode Disabled, but the envs reset themselves within a step "
                             "(multi_step.reset_within_step is true)")
        self._declare(len(self.envs), self.envs[0].observation_space, self.envs[0].action_space, autoreset_mode)

    def reset(self, seed: int | Sequence[int | None] | None = None, options: dict | Sequence[dict] | None = None):
        """Reset every env (env i with ``seed + i``, or ``seed[i]`` for a list); ``options`` is one dict for all
        envs or one per env (e.g. a ``video_path`` for the first few)."""
        per_env = options if isinstance(options, Sequence) else [options] * self.num_envs
        out = [env.reset(seed=s, options=o)
               for env, s, o in zip(self.envs, env_seeds(seed, self.num_envs), per_env, strict=True)]
        return stack_obs([o for o, _ in out]), {}

    def step(self, actions: np.ndarray):
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        results = []
        for env, a in zip(self.envs, actions):
            obs, reward, term, trunc, info = env.step(a)
            if same_step and (term or trunc) and "final_obs" not in info:  # the env does not reset itself
                info = {**info, "final_obs": obs}
                obs, _ = env.reset()
            results.append((obs, reward, term, trunc, info))
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

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
