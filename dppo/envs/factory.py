"""Build ``n_envs`` copies of a task with the reference's wrapper stack as a gymnasium vector env.

The env block of a config names the task (``env.name``) and the wrappers in order (``env.wrappers``). The
task's module makes the base env (:mod:`dppo.envs.tasks`); names of no registered task are gymnasium ids.
Envs are stepped in one process (``dppo.envs.vector.SyncVectorEnv``): on two cores that is faster than paying
inter-process costs (1.5-2.5x measured for MuJoCo locomotion). A task may register a batched implementation
that runs all envs of a run as one vector env with the same results (Avoid's ``AvoidVectorEnv``, tens of
times faster); with ``env.batched`` (default true) the factory uses it whenever it can reproduce the
config's wrapper stack, and the per-env sync stack otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import gymnasium as gym

from dppo.envs import tasks
from dppo.envs.vector import SyncVectorEnv
from dppo.envs.wrappers import WRAPPERS, wrap

__all__ = ["WRAPPERS", "make_env", "make_from_config", "make_vector_env", "wrap"]


def make_env(name: str, **kwargs: Any) -> gym.Env:
    """One base env by the reference's name: ``avoiding-m5`` (D3IL), ``hopper-medium-v2`` (gym locomotion),
    ``can`` (robomimic), or any registered gymnasium id."""
    task = tasks.get(name)
    if task is not None and task.make_env is not None:
        return task.make_env(name, **kwargs)
    return gym.make(name, **kwargs)


def _make_one(name: str, wrappers: Mapping | None, env_kwargs: Mapping, seed: int) -> gym.Env:
    env = wrap(make_env(name, **env_kwargs), wrappers)
    env.reset(seed=seed)
    return env


def make_vector_env(name: str, n_envs: int, wrappers: Mapping | None = None, seed: int = 0,
                    vector: str = "sync", env_kwargs: Mapping | None = None, batched: bool = True) -> Any:
    """``n_envs`` wrapped copies, env i seeded with seed + i; no auto-reset (the multi-step wrapper resets
    within a step when configured, and the runner resets at iterations). ``batched``: use the task's batched
    vector env when it has one for these wrappers (same results, no per-env Python loop)."""
    if vector != "sync":
        raise ValueError(f"env.vector must be 'sync', got '{vector}' (on two cores stepping in one process is "
                         f"faster than subprocesses; see benchmarks/)")
    task = tasks.get(name)
    if batched and task is not None and task.batched is not None:
        venv = task.batched(name, n_envs, wrappers, env_kwargs)
        if venv is not None:
            return venv
    return SyncVectorEnv([partial(_make_one, name, wrappers, dict(env_kwargs or {}), seed + i)
                          for i in range(n_envs)])


def make_from_config(env_cfg: Mapping[str, Any], seed: int) -> gym.vector.VectorEnv:
    """From the reference's ``env`` config block."""
    kwargs = dict(env_cfg.get("specific") or {})
    return make_vector_env(env_cfg["name"], int(env_cfg["n_envs"]), env_cfg.get("wrappers"), seed,
                           env_cfg.get("vector", "sync"), kwargs, bool(env_cfg.get("batched", True)))
