"""Build ``n_envs`` copies of a task with the reference's wrapper stack as a gymnasium vector env.

The env block of a config names the task (``env.name``) and the wrappers in order (``env.wrappers``). Envs are
stepped in one process (``dppo.envs.vector.SyncVectorEnv``): on two cores that is faster than paying
inter-process costs (spec/stack.md measured 1.5-2.5x for MuJoCo locomotion). The Avoid task has a batched
NumPy implementation: with ``env.batched`` (default true) its envs run as one ``AvoidVectorEnv``, which gives
the same results as the sync stack, tens of times faster; image observations (the ``avoid_image`` wrapper) are
not batched and always take the sync path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import gymnasium as gym

from dppo.envs.vector import SyncVectorEnv
from dppo.envs.wrappers import AvoidImageObs, MultiStep, NormalizeObsAction

WRAPPERS: dict[str, Callable[..., gym.Wrapper]] = {
    "d3il_lowdim": NormalizeObsAction,
    "mujoco_locomotion_lowdim": NormalizeObsAction,
    "robomimic_lowdim": NormalizeObsAction,
    "robomimic_image": NormalizeObsAction,
    "normalize": NormalizeObsAction,
    "avoid_image": AvoidImageObs,  # Avoid from pixels; before the normalisation wrapper (not batched)
    "multi_step": MultiStep,
}

ROBOMIMIC_TASKS = ("lift", "can", "square", "transport")


def make_env(name: str, **kwargs: Any) -> gym.Env:
    """One base env by the reference's name: ``avoiding-m5`` (D3IL), ``hopper-medium-v2`` (gym locomotion),
    ``can`` (robomimic), or any registered gymnasium id."""
    if name.startswith("avoiding"):
        import dppo.envs.avoid  # noqa: F401  (registers the ids)
        return gym.make(name, disable_env_checker=True, **kwargs).unwrapped
    if name.split("-")[0] in ROBOMIMIC_TASKS:
        from dppo.envs.robosuite_tasks import make_robosuite_env
        return make_robosuite_env(name, **kwargs)
    if name.split("-")[0] in ("hopper", "walker2d", "halfcheetah", "ant", "humanoid"):
        from dppo.envs.locomotion import make_locomotion_env
        return make_locomotion_env(name, **kwargs)
    return gym.make(name, **kwargs)


def wrap(env: gym.Env, wrappers: Mapping[str, Mapping[str, Any]] | None) -> gym.Env:
    """Apply the config's wrappers in order."""
    for name, kwargs in (wrappers or {}).items():
        if name not in WRAPPERS:
            raise KeyError(f"env.wrappers.{name} is not a known wrapper; expected one of {sorted(WRAPPERS)}")
        env = WRAPPERS[name](env, **dict(kwargs or {}))
    return env


def _make_one(name: str, wrappers: Mapping | None, env_kwargs: Mapping, seed: int) -> gym.Env:
    env = wrap(make_env(name, **env_kwargs), wrappers)
    env.reset(seed=seed)
    return env


def make_vector_env(name: str, n_envs: int, wrappers: Mapping | None = None, seed: int = 0,
                    vector: str = "sync", env_kwargs: Mapping | None = None, batched: bool = True) -> SyncVectorEnv:
    """``n_envs`` wrapped copies, env i seeded with seed + i; no auto-reset (the multi-step wrapper resets
    within a step when configured, and the runner resets at iterations). ``batched``: run ``avoiding-*`` envs
    as one :class:`~dppo.envs.avoid_vector.AvoidVectorEnv` (same results, no per-env Python loop)."""
    if vector != "sync":
        raise ValueError(f"env.vector must be 'sync', got '{vector}' (on two cores stepping in one process is "
                         f"faster than subprocesses; see benchmarks/)")
    if batched and name.startswith("avoiding"):
        from dppo.envs import avoid_vector
        if avoid_vector.supports(name, wrappers):
            return avoid_vector.AvoidVectorEnv(name, n_envs, wrappers, env_kwargs)
    return SyncVectorEnv([partial(_make_one, name, wrappers, dict(env_kwargs or {}), seed + i)
                          for i in range(n_envs)])


def make_from_config(env_cfg: Mapping[str, Any], seed: int) -> gym.vector.VectorEnv:
    """From the reference's ``env`` config block."""
    kwargs = dict(env_cfg.get("specific") or {})
    return make_vector_env(env_cfg["name"], int(env_cfg["n_envs"]), env_cfg.get("wrappers"), seed,
                           env_cfg.get("vector", "sync"), kwargs, bool(env_cfg.get("batched", True)))
