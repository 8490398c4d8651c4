"""All Avoid envs of a run as one :class:`~dppo.envs.avoid.AvoidBatch`, with the wrapper stack applied to arrays.

``SyncVectorEnv`` of ``MultiStep(NormalizeObsAction(AvoidEnv))`` steps N envs x T_a actions one Python call
at a time; this class does the same work with one NumPy call per inner step for all envs (tens of times
faster). It reproduces that stack exactly: the same float32/float64 arithmetic elementwise, so observations,
rewards, flags and the ``final_obs``/``full_obs`` infos are bit for bit those of the sync path
(``tests/test_vector_equivalence.py``). It registers itself as the Avoid task's batched env
(:mod:`dppo.envs.tasks`): the factory uses it for ``avoiding-*`` envs unless ``env.batched`` is false, when the
wrappers are (a normalisation wrapper, then) ``multi_step``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dppo.envs import tasks
from dppo.envs.avoid import ENV_IDS, AvoidBatch, make_avoid_env
from dppo.envs.vector import AutoresetMode, VectorEnv
from dppo.envs.wrappers import WRAPPERS, ArrayNormalization, MultiStep, NormalizeObsAction, wrap

NORMALIZE_WRAPPERS = tuple(name for name, cls in WRAPPERS.items() if cls is NormalizeObsAction)
# AvoidEnv arguments that reach the env on the sync path (gym.make takes ``max_episode_steps`` for its own
# TimeLimit, which make_avoid_env's ``.unwrapped`` drops again: it has no effect there, so none here either)
_BATCH_KWARGS = ("stale_obs", "tracker", "pillars", "tracker_gains")


def supports(name: str, wrappers: Mapping[str, Any] | None) -> bool:
    """Whether this class can stand in for the sync stack: an ``avoiding-*`` id and the wrappers
    [one normalisation wrapper,] multi_step, in that order (the stack every Avoid config uses)."""
    if name not in ENV_IDS:
        return False
    names = list(wrappers or {})
    return names in [["multi_step"]] + [[n, "multi_step"] for n in NORMALIZE_WRAPPERS]


class AvoidVectorEnv(ArrayNormalization, VectorEnv):
    """``n_envs`` Avoid envs behind the same wrappers as the sync vector env, stepped as one batch.

    The same contract as :class:`dppo.envs.vector.SyncVectorEnv` (autoreset mode SameStep when
    ``multi_step.reset_within_step``, else Disabled): ``reset(seed)`` -> ({"state": (N, T_o, 4)}, {}),
    ``step(actions (N, T_a, 2))`` -> (obs, rewards (N,) float32, terminated (N,), truncated (N,), infos).
    """

    def __init__(self, name: str, n_envs: int, wrappers: Mapping[str, Any] | None = None,
                 env_kwargs: Mapping[str, Any] | None = None):
        if not supports(name, wrappers):
            raise ValueError(f"AvoidVectorEnv cannot reproduce env '{name}' with wrappers {list(wrappers or {})}")
        wrappers = {k: dict(v or {}) for k, v in (wrappers or {}).items()}
        env_kwargs = dict(env_kwargs or {})
        # one wrapped env, built as the sync path builds it: it validates the config the same way and gives
        # the spaces and the normalisation arrays
        ref = wrap(make_avoid_env(name, **env_kwargs), wrappers)
        self.norm, self.clamp_obs = None, False
        ms: dict[str, Any] = {}
        env = ref
        while hasattr(env, "env"):
            if isinstance(env, NormalizeObsAction):
                self.norm, self.clamp_obs = env.norm, env.clamp_obs
            elif isinstance(env, MultiStep):
                ms = {"n_obs_steps": env.n_obs_steps, "n_action_steps": env.n_action_steps,
                      "max_episode_steps": env.max_episode_steps, "reset_within_step": env.reset_within_step,
                      "pass_full_observations": env.pass_full_observations}
            env = env.env
        ref.close()
        self.n_obs_steps, self.n_action_steps = ms["n_obs_steps"], ms["n_action_steps"]
        self.max_episode_steps = ms["max_episode_steps"]
        self.reset_within_step = ms["reset_within_step"]
        self.pass_full_observations = ms["pass_full_observations"]
        self._declare(n_envs, ref.observation_space, ref.action_space,
                      AutoresetMode.SAME_STEP if self.reset_within_step else AutoresetMode.DISABLED)
        self.sim = AvoidBatch(self.num_envs, reward_mode_bit=ENV_IDS[name],
                              **{k: v for k, v in env_kwargs.items() if k in _BATCH_KWARGS})
        self.elapsed = np.zeros(self.num_envs, np.int64)
        self.history = np.zeros((self.num_envs, self.n_obs_steps, 4), np.float32)

    # the wrappers' arithmetic, on arrays ------------------------------------------------------------------
    def _obs(self) -> dict[str, np.ndarray]:
        return {"state": self.history.copy()}

    def _reset_rows(self, mask: np.ndarray | None) -> None:
        rows = slice(None) if mask is None else mask
        obs = self._normalize(self.sim.reset(mask))
        self.history[rows] = obs[rows][:, None]
        self.elapsed[rows] = 0

    # ------------------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        """Reset every env (the task has no randomness: ``seed`` only matters to the sync path's RNGs)."""
        self._reset_rows(None)
        return self._obs(), {}

    def step(self, actions: np.ndarray):
        n = self.num_envs
        actions = np.asarray(actions).reshape(n, self.n_action_steps, -1)
        total = np.zeros(n)  # float64, summed in the wrapper's order
        full = []
        for i in range(self.n_action_steps):
            obs, reward, term, trunc = self.sim.step(self._unnormalize(actions[:, i]), with_info=False)
            obs = self._normalize(obs)
            self.elapsed += 1
            self.history = np.concatenate([self.history[:, 1:], obs[:, None]], axis=1)
            total += reward
            if self.max_episode_steps is not None:
                trunc = trunc | ((self.elapsed >= self.max_episode_steps) & ~term)
            terminated, truncated = term, trunc
            full.append(self.history[:, -1])
            ended = term | trunc
            if ended.any():
                # All envs share one episode clock (the task never terminates, and envs are reset together),
                # so they end at the same inner step, where the wrapper stops executing the chunk.
                if not ended.all():
                    raise RuntimeError("AvoidVectorEnv: envs ended at different steps; use env.batched=false")
                break
        infos: dict[str, Any] = {}
        if self.pass_full_observations:
            full += [full[-1]] * (self.n_action_steps - len(full))
            infos["full_obs"] = np.stack(full, axis=1).astype(np.float32)
            infos["_full_obs"] = np.ones(n, bool)
        obs = self._obs()
        done = terminated | truncated
        if self.reset_within_step and done.any():
            final = obs["state"].copy()
            final[~done] = final[int(np.argmax(done))]  # as the sync env: rows without one repeat a valid one
            infos["final_obs"] = {"state": final}
            infos["_final_obs"] = done.copy()
            self._reset_rows(done)
            obs = self._obs()
        return obs, total.astype(np.float32), terminated, truncated, infos

    def call(self, name: str, *args, **kwargs) -> list[Any]:
        raise NotImplementedError("AvoidVectorEnv has no per-env objects; set env.batched=false to use them")



def make_batched(name: str, n_envs: int, wrappers: Mapping[str, Any] | None = None,
                 env_kwargs: Mapping[str, Any] | None = None) -> AvoidVectorEnv | None:
    """The task's batched vector env, or None when :func:`supports` says the wrappers need the sync stack."""
    return AvoidVectorEnv(name, n_envs, wrappers, env_kwargs) if supports(name, wrappers) else None


tasks.register("avoiding", batched=make_batched)
