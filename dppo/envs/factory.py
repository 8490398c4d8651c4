"""Build ``n_envs`` copies of a task with the reference's wrapper stack as a gymnasium vector env.

The env block of a config names the task (``env.name``) and the wrappers in order (``env.wrappers``). The
task's module makes the base env (:mod:`dppo.envs.tasks`); names of no registered task are gymnasium ids.
Every vector env follows one contract (:mod:`dppo.envs.vector`: gymnasium's ``VectorEnv`` with an explicit
autoreset mode). Envs are stepped in one process (``dppo.envs.vector.SyncVectorEnv``): on two cores that is
faster than paying inter-process costs (1.5-2.5x measured for MuJoCo locomotion). A task may register a
batched implementation that runs all envs of a run as one vector env with the same results (Avoid's
``AvoidVectorEnv``, tens of times faster); with ``env.batched`` (default true) the factory uses it whenever
it can reproduce the config's wrapper stack, and the per-env sync stack otherwise.
``env.backend`` picks who steps the physics: ``gymnasium`` (default) or ``envpool`` (the optional ``envpool``
package, ``pip install -e '.[fast]'``: C++ threads, for the tasks that register an EnvPool hook - the MuJoCo
locomotion robots; see :mod:`dppo.envs.envpool_vector`). When envpool is not installed the factory logs why and
builds the gymnasium envs. ``env.overlap`` (default false) splits the envs in two halves that the rollout
steps while the policy samples for the other half (:mod:`dppo.envs.split`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import gymnasium as gym

from dppo.envs import tasks
from dppo.envs.vector import AutoresetMode, SyncVectorEnv
from dppo.envs.wrappers import WRAPPERS, wrap

__all__ = ["BACKENDS", "WRAPPERS", "make_env", "make_from_config", "make_vector_env", "wrap"]

log = logging.getLogger(__name__)
BACKENDS = ("gymnasium", "envpool")


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


def envpool_available() -> bool:
    return importlib.util.find_spec("envpool") is not None


def make_vector_env(name: str, n_envs: int, wrappers: Mapping | None = None, seed: int = 0,
                    vector: str = "sync", env_kwargs: Mapping | None = None, batched: bool = True,
                    autoreset_mode: AutoresetMode | str | None = None, backend: str = "gymnasium",
                    overlap: bool = False) -> Any:
    """``n_envs`` wrapped copies, env i seeded with seed + i. ``autoreset_mode`` None follows the config (SameStep
    when ``multi_step.reset_within_step``, else Disabled: the runner resets at iterations); SameStep makes every
    ended episode reset within its step (what replay-based learners and data makers want). ``batched``: use
    the task's batched vector env when it has one for these wrappers (same results, no per-env Python loop).
    ``backend``: ``envpool`` steps the task's envs in EnvPool when the task has an EnvPool port (else a
    ValueError) and the package is installed (else a logged fallback to gymnasium). ``overlap``: two halves
    behind a :class:`~dppo.envs.split.SplitVectorEnv`, which the rollout steps in a worker thread while the
    policy samples for the other half (env i keeps seed + i)."""
    if autoreset_mode is not None and AutoresetMode(autoreset_mode) == AutoresetMode.SAME_STEP and wrappers \
            and "multi_step" in wrappers:
        wrappers = {**wrappers, "multi_step": {**dict(wrappers["multi_step"] or {}), "reset_within_step": True}}
    if overlap and n_envs >= 2:
        from dppo.envs.split import SplitVectorEnv
        first = n_envs // 2
        return SplitVectorEnv([make_vector_env(name, n, wrappers, s, vector, env_kwargs, batched, autoreset_mode,
                                               backend)
                               for n, s in ((first, seed), (n_envs - first, seed + first))])
    if vector != "sync":
        raise ValueError(f"env.vector must be 'sync', got '{vector}' (on two cores stepping in one process is "
                         f"faster than subprocesses; see benchmarks/)")
    if backend not in BACKENDS:
        raise ValueError(f"env.backend must be one of {list(BACKENDS)}, got '{backend}'")
    task = tasks.get(name)
    if backend == "envpool":
        if task is None or task.envpool is None:
            raise ValueError(f"env.backend=envpool: env '{name}' has no EnvPool port (the MuJoCo locomotion tasks "
                             f"hopper/walker2d/halfcheetah do); use env.backend=gymnasium")
        if envpool_available():
            return task.envpool(name, n_envs, wrappers, dict(env_kwargs or {}), seed)
        log.warning("env.backend=envpool but the envpool package is not installed (pip install -e '.[fast]'); "
                    "stepping '%s' with gymnasium instead", name)
    if batched and task is not None and task.batched is not None:
        venv = task.batched(name, n_envs, wrappers, env_kwargs)
        if venv is not None:
            return venv
    return SyncVectorEnv([partial(_make_one, name, wrappers, dict(env_kwargs or {}), seed + i)
                          for i in range(n_envs)], autoreset_mode)


def make_from_config(env_cfg: Mapping[str, Any], seed: int, n_envs: int | None = None,
                     autoreset_mode: AutoresetMode | str | None = None) -> gym.vector.VectorEnv:
    """From the reference's ``env`` config block (``n_envs`` overrides ``env.n_envs``)."""
    kwargs = dict(env_cfg.get("specific") or {})
    wrappers = env_cfg.get("wrappers")
    if wrappers is not None and not isinstance(wrappers, dict):
        wrappers = {k: dict(v or {}) for k, v in wrappers.items()}
    return make_vector_env(env_cfg["name"], int(env_cfg["n_envs"] if n_envs is None else n_envs), wrappers, seed,
                           env_cfg.get("vector", "sync"), kwargs, bool(env_cfg.get("batched", True)),
                           autoreset_mode, str(env_cfg.get("backend", "gymnasium")),
                           bool(env_cfg.get("overlap", False)))
