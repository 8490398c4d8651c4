"""Per-task hooks, so that generic code (the env factory, the runners) never names a task.

A task family is the set of env names that share the part before the first "-": ``avoiding-m5`` ->
``avoiding``, ``hopper-medium-v2`` -> ``hopper``, ``can`` -> ``can``. The modules that implement a family
register, when imported, what generic code may ask of its envs:

* ``make_env(name, **kwargs)``: one base env, before the config's wrappers;
* ``batched(name, n_envs, wrappers, env_kwargs)``: optional; all envs of a run as one vector env with the
  wrappers applied to arrays, or None when it cannot reproduce that wrapper stack (the factory then builds
  the per-env sync stack);
* ``envpool(name, n_envs, wrappers, env_kwargs, seed)``: optional; the run's envs stepped by EnvPool
  (``env.backend: envpool``, :mod:`dppo.envs.envpool_vector`);
* ``summarize(paths, env_kwargs)``: optional; task metrics of an evaluation's raw state paths (one (T, D)
  array per env; ``env_kwargs`` is the config's ``env.specific``), merged into the evaluation result.

:data:`MODULES` says which modules register each family; :func:`get` imports them on first use, so a task's
dependencies (MuJoCo, robosuite) load only when one of its envs is asked for. A name of no family here is a
gymnasium id and has no hooks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

_AVOID = ("dppo.envs.avoid", "dppo.envs.avoid_vector")
_ROBOMIMIC = ("dppo.envs.robosuite_tasks",)
_LOCOMOTION = ("dppo.envs.locomotion",)
MODULES: dict[str, tuple[str, ...]] = {
    "avoiding": _AVOID,
    **dict.fromkeys(("lift", "can", "square", "transport"), _ROBOMIMIC),
    **dict.fromkeys(("hopper", "walker2d", "halfcheetah", "ant", "humanoid"), _LOCOMOTION),
}


@dataclass(frozen=True)
class Task:
    """The hooks of one task family (see the module docstring)."""

    make_env: Callable[..., Any] | None = None
    batched: Callable[..., Any] | None = None
    envpool: Callable[..., Any] | None = None
    summarize: Callable[[Sequence[np.ndarray], Mapping[str, Any]], dict[str, float]] | None = None


_REGISTRY: dict[str, Task] = {}


def family(name: str) -> str:
    return str(name).split("-")[0]


def register(families: str | Sequence[str], **hooks: Callable[..., Any]) -> None:
    """Set hooks (``make_env``, ``batched``, ``envpool``, ``summarize``) of one or more families; hooks registered
    before by another module of the family are kept."""
    for fam in [families] if isinstance(families, str) else families:
        _REGISTRY[fam] = replace(_REGISTRY.get(fam, Task()), **hooks)


def get(name: str) -> Task | None:
    """The hooks of env ``name``'s family (its modules imported on first use), or None for other names."""
    fam = family(name)
    if fam not in MODULES:
        return None
    for module in MODULES[fam]:
        importlib.import_module(module)
    return _REGISTRY.get(fam)


def summary(name: str, paths: Sequence[np.ndarray], env_kwargs: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Task metrics of evaluation paths of env ``name`` ({} when its task registers none or there are no paths)."""
    task = get(name)
    if task is None or task.summarize is None or not paths:
        return {}
    return dict(task.summarize(paths, dict(env_kwargs or {})))
