"""Build ``n_envs`` copies of a task with the reference's wrapper stack as a gymnasium vector env.

The env block of a config names the task (``env.name``) and the wrappers in order (``env.wrappers``). The
task's module makes the base env (:mod:`dppo.envs.tasks`); names of no registered task are gymnasium ids.
Every vector env follows one contract (:mod:`dppo.envs.vector`: gymnasium's ``VectorEnv`` with an explicit
autoreset mode). ``env.vector`` says where the per-env stacks are stepped: ``sync`` (default,
``dppo.envs.vector.SyncVectorEnv``) in this process, one after another - on two cores faster than paying
inter-process costs for cheap envs (1.5-2.5x measured for MuJoCo locomotion); ``subprocess``
(:class:`dppo.envs.subproc.SubprocVectorEnv`) in ``env.n_workers`` spawned processes (default
``min(n_envs, cpu count)``), each stepping a contiguous block of the envs - for heavy envs such as robosuite
(1.85x with 2 workers on two quiet cores, benchmarks/notes.md). A task may register a batched implementation
that runs all envs of a run as one vector env with the same results (Avoid's ``AvoidVectorEnv``, tens of times
faster); with ``env.batched`` (default true) the factory uses it whenever it can reproduce the config's wrapper
stack (also when ``env.vector`` is ``subprocess``: the batched env wins, with a logged note), and the per-env
stack otherwise. ``env.backend`` picks who steps the physics: ``gymnasium`` (default) or ``envpool`` (the optional
``envpool`` package, ``pip install -e '.[fast]'``: C++ threads, for the tasks that register an EnvPool hook -
the MuJoCo locomotion robots; see :mod:`dppo.envs.envpool_vector`; it does not combine with ``subprocess``).
When envpool is not installed the factory logs why and builds the gymnasium envs. ``env.overlap`` (default
false) splits the envs in two halves that the rollout steps while the policy samples for the other half
(:mod:`dppo.envs.split`).
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

__all__ = ["BACKENDS", "VECTORS", "WRAPPERS", "make_env", "make_from_config", "make_vector_env", "wrap"]

log = logging.getLogger(__name__)
BACKENDS = ("gymnasium", "envpool")
VECTORS = ("sync", "subprocess")


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
                    overlap: bool = False, n_workers: int | None = None) -> Any:
    """``n_envs`` wrapped copies, env i seeded with seed + i. ``autoreset_mode`` None follows the config (SameStep
    when ``multi_step.reset_within_step``, else Disabled: the runner resets at iterations); SameStep makes every
    ended episode reset within its step (what replay-based learners and data makers want). ``batched``: use
    the task's batched vector env when it has one for these wrappers (same results, no per-env Python loop).
    ``backend``: ``envpool`` steps the task's envs in EnvPool when the task has an EnvPool port (else a
    ValueError) and the package is installed (else a logged fallback to gymnasium). ``overlap``: two halves
    behind a :class:`~dppo.envs.split.SplitVectorEnv`, which the rollout steps in a worker thread while the
    policy samples for the other half (env i keeps seed + i). ``vector``: ``sync`` steps the envs in this
    process, ``subprocess`` in ``n_workers`` worker processes (:class:`~dppo.envs.subproc.SubprocVectorEnv`, same
    envs and results); a task's batched env is used instead when it applies, and ``backend=envpool`` refuses
    ``subprocess``."""
    if autoreset_mode is not None and AutoresetMode(autoreset_mode) == AutoresetMode.SAME_STEP and wrappers \
            and "multi_step" in wrappers:
        wrappers = {**wrappers, "multi_step": {**dict(wrappers["multi_step"] or {}), "reset_within_step": True}}
    if overlap and n_envs >= 2:
        from dppo.envs.split import SplitVectorEnv
        first = n_envs // 2
        return SplitVectorEnv([make_vector_env(name, n, wrappers, s, vector, env_kwargs, batched, autoreset_mode,
                                               backend, overlap=False, n_workers=n_workers)
                               for n, s in ((first, seed), (n_envs - first, seed + first))])
    if vector not in VECTORS:
        raise ValueError(f"env.vector must be one of {list(VECTORS)}, got '{vector}'")
    if backend not in BACKENDS:
        raise ValueError(f"env.backend must be one of {list(BACKENDS)}, got '{backend}'")
    task = tasks.get(name)
    if backend == "envpool":
        if vector == "subprocess":
            raise ValueError("env.backend=envpool steps its envs in its own threads: it does not combine with "
                             "env.vector=subprocess; use env.vector=sync")
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
            if vector == "subprocess":
                log.info("env.vector=subprocess: '%s' has a batched vector env for these wrappers, which is used "
                         "instead (set env.batched: false to step per-env stacks in subprocesses)", name)
            return venv
    env_fns = [partial(_make_one, name, wrappers, dict(env_kwargs or {}), seed + i) for i in range(n_envs)]
    if vector == "subprocess":
        from dppo.envs.subproc import SubprocVectorEnv
        return SubprocVectorEnv(env_fns, autoreset_mode, n_workers)
    return SyncVectorEnv(env_fns, autoreset_mode)


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
                           bool(env_cfg.get("overlap", False)),
                           None if env_cfg.get("n_workers") is None else int(env_cfg["n_workers"]))
