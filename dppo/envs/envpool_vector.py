"""Locomotion envs stepped by EnvPool (C++ threads), behind the same contract as the sync vector env.

``env.backend: envpool`` (default ``gymnasium``) runs the Hopper / Walker2d / HalfCheetah v5 envs of a
fine-tuning or evaluation run in an ``envpool`` pool instead of ``SyncVectorEnv`` of gymnasium envs. EnvPool is
an optional dependency (``pip install -e '.[fast]'``); when it is missing the factory says so and builds the
gymnasium envs.

The config's wrapper stack ([``mujoco_locomotion_lowdim``,] ``multi_step`` with ``reset_within_step``) is applied
to arrays by :class:`ArrayMultiStepEnv`, which works over any batch of raw envs that can step and reset a subset
of its envs (:class:`EnvPoolBatch`, or :class:`GymnasiumBatch`, a list of gymnasium envs used to check that the
array code reproduces the per-env wrappers bit for bit: ``tests/test_envpool.py``). Each env runs its chunk's
actions in order and stops at the first inner step that ends its episode, as ``MultiStep`` does, while the other
envs go on; an ended env is reset at the end of the step and its pre-reset observation goes to
``infos["final_obs"]`` with the ``_final_obs`` mask.

What differs from the gymnasium envs (``tests/test_envpool.py`` measures it): EnvPool 1.2.5 ships its own
MuJoCo build (3.6.0; gymnasium here runs mujoco 3.9.0) and its own C++ port of the v5 envs. From the same
state and action, one step agrees to ~1e-13 in the observation and to float32 rounding in the reward (EnvPool
returns float32 rewards); over a whole episode the trajectories drift apart as any two MuJoCo builds do.
Reset noise comes from EnvPool's own generator, so start states are not gymnasium's for the same seed;
``reset(seed=s)`` rebuilds the pool with seed s (EnvPool cannot re-seed a live pool), so a seeded reset is
reproducible. The ``x_position`` EnvPool reports at reset is 0 rather than the noisy start x (observations
exclude x, and no reward or termination reads it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from dppo.envs.vector import AutoresetMode, VectorEnv
from dppo.envs.wrappers import WRAPPERS, ArrayNormalization, MultiStep, NormalizeObsAction, wrap

NORMALIZE_WRAPPERS = tuple(name for name, cls in WRAPPERS.items() if cls is NormalizeObsAction)


class BatchEnvs:
    """What :class:`ArrayMultiStepEnv` needs of a batch of raw envs (one inner step per call)."""

    num_envs: int

    def reset(self, ids: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Reset envs ``ids`` (all of them when ``seed`` is given: env i then gets seed + i); raw obs (len(ids), D)."""
        raise NotImplementedError

    def step(self, actions: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One step of envs ``ids`` (sorted): raw obs, rewards (float64), terminated, truncated, in ``ids`` order."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class GymnasiumBatch(BatchEnvs):
    """A list of gymnasium envs stepped one by one (the reference the array wrappers are checked against)."""

    def __init__(self, envs: Sequence[gym.Env]):
        self.envs = list(envs)
        self.num_envs = len(self.envs)

    def reset(self, ids, seed=None):
        return np.stack([self.envs[i].reset(seed=None if seed is None else seed + int(i))[0] for i in ids])

    def step(self, actions, ids):
        out = [self.envs[i].step(a) for i, a in zip(ids, actions)]
        return (np.stack([o[0] for o in out]), np.array([float(o[1]) for o in out]),
                np.array([o[2] for o in out], bool), np.array([o[3] for o in out], bool))

    def close(self):
        for env in self.envs:
            env.close()


class EnvPoolBatch(BatchEnvs):
    """``envpool.make(task_id, env_type="gymnasium")`` in synchronous mode, stepping any subset of its envs."""

    def __init__(self, task_id: str, num_envs: int, seed: int = 0, num_threads: int = 0, **kwargs: Any):
        import envpool  # optional dependency: the factory checks for it first

        self._make: Callable[[int], Any] = lambda s: envpool.make(
            task_id, env_type="gymnasium", num_envs=num_envs, seed=int(s), num_threads=int(num_threads), **kwargs)
        self.num_envs = int(num_envs)
        self.pool = self._make(seed)

    def _ordered(self, ids: np.ndarray, returned: np.ndarray) -> np.ndarray:
        """Row of each of ``ids`` in a result whose env ids are ``returned``."""
        return np.argsort(returned)[np.searchsorted(np.sort(returned), ids)]

    def reset(self, ids, seed=None):
        if seed is not None:  # a live pool cannot be re-seeded: rebuild it (tens of ms)
            self.pool.close()
            self.pool = self._make(seed)
            obs, info = self.pool.reset()
        else:
            obs, info = self.pool.reset(env_id=np.asarray(ids, np.int32))
        return obs[self._ordered(ids, np.asarray(info["env_id"]))]

    def step(self, actions, ids):
        obs, reward, term, trunc, info = self.pool.step(np.asarray(actions, np.float64), np.asarray(ids, np.int32))
        rows = self._ordered(ids, np.asarray(info["env_id"]))
        return (obs[rows], np.asarray(reward, np.float64)[rows], np.asarray(term, bool)[rows],
                np.asarray(trunc, bool)[rows])

    def close(self):
        self.pool.close()


def supports(wrappers: Mapping[str, Any] | None) -> bool:
    """[a normalisation wrapper,] multi_step with reset_within_step: the stack of every gym fine-tuning config."""
    names = list(wrappers or {})
    if names not in [["multi_step"]] + [[n, "multi_step"] for n in NORMALIZE_WRAPPERS]:
        return False
    return bool(dict((wrappers or {})["multi_step"] or {}).get("reset_within_step", False))


class ArrayMultiStepEnv(ArrayNormalization, VectorEnv):
    """``MultiStep(NormalizeObsAction(env))`` for every env of a :class:`BatchEnvs`, on arrays.

    The contract of :mod:`dppo.envs.vector` (autoreset mode SameStep: the stack resets within the step):
    ``reset(seed, options)`` -> ({"state":
    (N, T_o, D)}, {}), ``step(actions (N, T_a, D_a))`` -> (obs, rewards (N,) float32, terminated (N,),
    truncated (N,), infos with ``final_obs``/``_final_obs`` and, if asked, ``full_obs``/``_full_obs``).
    ``reference`` is one wrapped gymnasium env built as the sync path builds it: it checks the config the same
    way and gives the spaces and the normalisation arrays.
    """

    def __init__(self, envs: BatchEnvs, reference: gym.Env):
        self.envs = envs
        self._declare(envs.num_envs, reference.observation_space, reference.action_space, AutoresetMode.SAME_STEP)
        self.norm, self.clamp_obs, ms = None, False, None
        env = reference
        while hasattr(env, "env"):
            if isinstance(env, NormalizeObsAction):
                self.norm, self.clamp_obs = env.norm, env.clamp_obs
            elif isinstance(env, MultiStep):
                ms = env
            env = env.env
        if ms is None or not ms.reset_within_step:
            raise ValueError("ArrayMultiStepEnv needs the multi_step wrapper with reset_within_step: true")
        self.n_obs_steps, self.n_action_steps = ms.n_obs_steps, ms.n_action_steps
        self.max_episode_steps = ms.max_episode_steps
        self.pass_full_observations = ms.pass_full_observations
        reference.close()
        self.elapsed = np.zeros(self.num_envs, np.int64)
        self.history: np.ndarray | None = None  # (N, T_o, D)

    # the wrappers' arithmetic, on arrays (NormalizeObsAction's, row for row) -------------------------------
    def _set_rows(self, ids: np.ndarray, raw: np.ndarray) -> None:
        obs = self._normalize(raw)
        if self.history is None:
            self.history = np.zeros((self.num_envs, self.n_obs_steps, obs.shape[-1]), obs.dtype)
        self.history[ids] = obs[:, None]
        self.elapsed[ids] = 0

    # ------------------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        """Reset every env (env i with ``seed + i`` on the gymnasium batch; EnvPool rebuilds its pool with
        ``seed``)."""
        ids = np.arange(self.num_envs)
        self._set_rows(ids, self.envs.reset(ids, seed))
        return {"state": self.history.copy()}, {}

    def step(self, actions: np.ndarray):
        if self.history is None:
            raise RuntimeError("step() before reset()")
        n, t_a = self.num_envs, self.n_action_steps
        actions = np.asarray(actions).reshape(n, t_a, -1)
        total = np.zeros(n)  # float64, summed in the wrapper's order
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        active = np.ones(n, bool)
        last = np.zeros(n, np.int64)  # index of each env's last executed inner step
        full = np.zeros((n, t_a, self.history.shape[-1]), self.history.dtype) if self.pass_full_observations else None
        for i in range(t_a):
            ids = np.flatnonzero(active)
            if not len(ids):
                break
            raw, reward, term, trunc = self.envs.step(self._unnormalize(actions[ids, i]), ids)
            obs = self._normalize(raw)
            self.elapsed[ids] += 1
            self.history[ids] = np.concatenate([self.history[ids, 1:], obs[:, None]], axis=1)
            total[ids] += reward
            if self.max_episode_steps is not None:
                trunc = trunc | ((self.elapsed[ids] >= self.max_episode_steps) & ~term)
            terminated[ids], truncated[ids] = term, trunc
            last[ids] = i
            if full is not None:
                full[ids, i] = obs
            active[ids] = ~(term | trunc)
        infos: dict[str, Any] = {}
        if full is not None:  # rows after an env's last executed step repeat it, as MultiStep pads
            for i in range(t_a):
                rows = np.flatnonzero(last < i)
                full[rows, i] = full[rows, last[rows]]
            infos["full_obs"] = full
            infos["_full_obs"] = np.ones(n, bool)
        done = terminated | truncated
        obs = {"state": self.history.copy()}
        if done.any():
            final = obs["state"].copy()
            final[~done] = final[int(np.argmax(done))]  # as the sync env: rows without one repeat a valid one
            infos["final_obs"] = {"state": final}
            infos["_final_obs"] = done.copy()
            ended = np.flatnonzero(done)
            self._set_rows(ended, self.envs.reset(ended))
            obs = {"state": self.history.copy()}
        return obs, total.astype(np.float32), terminated, truncated, infos

    def call(self, name: str, *args, **kwargs) -> list[Any]:
        raise NotImplementedError(f"{type(self.envs).__name__} has no per-env gymnasium objects (call('{name}')); "
                                  f"set env.backend=gymnasium to use them (videos, renders)")

    def close_extras(self, **kwargs: Any) -> None:
        self.envs.close()


def envpool_kwargs(task_id: str, env_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``env.specific`` keys as EnvPool config keys; a key EnvPool does not know raises a ValueError naming it."""
    import envpool

    known = set(envpool.make_spec(task_id).config._fields)
    kwargs = dict(env_kwargs)
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise ValueError(f"env.backend=envpool: env.specific keys {unknown} have no EnvPool counterpart for "
                         f"{task_id}; use env.backend=gymnasium")
    return kwargs


def make_envpool_vector_env(task_id: str, reference_fn: Callable[[], gym.Env], n_envs: int,
                            wrappers: Mapping[str, Any] | None, seed: int, env_kwargs: Mapping[str, Any],
                            num_threads: int = 0) -> ArrayMultiStepEnv:
    """The EnvPool vector env of ``n_envs`` copies of ``task_id`` behind ``wrappers`` (see :func:`supports`);
    ``reference_fn`` builds one wrapped gymnasium env (spaces, normalisation, config checks)."""
    if not supports(wrappers):
        within = dict((wrappers or {}).get("multi_step") or {}).get("reset_within_step")
        raise ValueError(f"env.backend=envpool supports the wrappers [mujoco_locomotion_lowdim,] multi_step with "
                         f"reset_within_step: true; got {list(wrappers or {})} (reset_within_step={within}); use "
                         f"env.backend=gymnasium")
    reference = wrap(reference_fn(), wrappers)
    batch = EnvPoolBatch(task_id, n_envs, seed, num_threads, **envpool_kwargs(task_id, env_kwargs))
    return ArrayMultiStepEnv(batch, reference)
