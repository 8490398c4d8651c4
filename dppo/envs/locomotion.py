"""Gym locomotion tasks: the reference's d4rl names mapped to gymnasium's MuJoCo v5 envs.

The reference builds ``hopper-medium-v2`` etc. through ``d4rl.gym_mujoco`` (gym 0.22, mujoco-py, MuJoCo 2.1),
none of which installs here. The same robots are gymnasium's ``Hopper-v5``,
``Walker2d-v5`` and ``HalfCheetah-v5`` (MuJoCo >= 2.3.3 bindings). The dataset part of a name ("medium",
"medium-replay", "expert", ...) only selects data in the reference; every variant runs the same env.

What is the same: observation dims (Hopper 11, Walker2d 17, HalfCheetah 17, x position excluded), action dims
(3, 6, 6, in [-1, 1]), frame skips (4, 4, 5), reward terms and weights, health ranges, reset noise, the
1000-step time limit. So v5 returns are on the same scale as v2 returns (and D4RL's normalised scores).

What differs (v2 -> v5):

* **Termination semantics [quirk fixed].** gym 0.22's TimeLimit returns ``done=True`` with
  ``info["TimeLimit.truncated"]=True`` at step 1000, which the reference's MultiStep wrapper turns into
  ``terminated=True`` (and truncated=True): the time limit was treated as a true terminal, so value targets
  did not bootstrap there. gymnasium reports it as ``truncated=True, terminated=False``; only a fall
  (unhealthy state) terminates. Our MultiStep keeps that distinction.
* Hopper/Walker2d: ``healthy_reward`` is only paid while healthy (v2 also paid it on the terminal, unhealthy
  step: returns of episodes that end by falling are 1 lower).
* Walker2d: both feet have the same friction (1.9); v2's right foot had 0.9 and slid more.
* Physics run on MuJoCo 3.x instead of 2.1 (contact solver details), so trajectories are not bit-identical.
* ``reset()`` returns a non-empty info; reward terms are in ``info["reward_forward"|"reward_ctrl"|...]``.

Observations and actions are raw here; the config's ``mujoco_locomotion_lowdim`` wrapper
(:class:`dppo.envs.wrappers.NormalizeObsAction`) normalises them with the dataset's ``normalization.npz``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from dppo.envs import tasks

ROBOTS = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}
OBS_DIMS = {"hopper": 11, "walker2d": 17, "halfcheetah": 17}
ACTION_DIMS = {"hopper": 3, "walker2d": 6, "halfcheetah": 6}
MAX_EPISODE_STEPS = 1000

# keys the reference's env block may pass that have no meaning for a gymnasium MuJoCo env
_IGNORED_KWARGS = ("device", "normalization_path")


def robot_of(name: str) -> str:
    """``hopper-medium-v2`` -> ``hopper``; raises a ValueError naming the accepted robots otherwise."""
    robot = name.split("-")[0].lower()
    if robot not in ROBOTS:
        raise ValueError(f"unknown locomotion env '{name}'; expected a name starting with one of "
                         f"{sorted(ROBOTS)} (e.g. hopper-medium-v2, walker2d-v2, halfcheetah-medium-expert-v2)")
    return robot


def gymnasium_id(name: str) -> str:
    """The gymnasium id that runs a reference env name: ``hopper-medium-v2`` -> ``Hopper-v5``."""
    if name in ROBOTS.values():
        return name
    return ROBOTS[robot_of(name)]


def make_locomotion_env(name: str, max_episode_steps: int = MAX_EPISODE_STEPS, **kwargs: Any) -> gym.Env:
    """A raw (unnormalised) gymnasium v5 env for a reference locomotion name, with its 1000-step TimeLimit.

    ``kwargs`` go to ``gymnasium.make`` (e.g. ``render_mode="rgb_array"``, ``terminate_when_unhealthy``).
    """
    env_id = gymnasium_id(name)
    for key in _IGNORED_KWARGS:
        kwargs.pop(key, None)
    return gym.make(env_id, max_episode_steps=max_episode_steps, disable_env_checker=True, **kwargs)


def make_envpool_env(name: str, n_envs: int, wrappers: Any, env_kwargs: Any, seed: int) -> Any:
    """The run's envs stepped by EnvPool's C++ port of the same v5 env (``env.backend: envpool``; see
    :mod:`dppo.envs.envpool_vector` for what differs)."""
    from dppo.envs.envpool_vector import make_envpool_vector_env

    kwargs = {k: v for k, v in dict(env_kwargs or {}).items() if k not in _IGNORED_KWARGS}
    kwargs.setdefault("max_episode_steps", MAX_EPISODE_STEPS)
    return make_envpool_vector_env(gymnasium_id(name), lambda: make_locomotion_env(name, **dict(env_kwargs or {})),
                                   n_envs, wrappers, seed, kwargs)


# the reference's locomotion robots; those without a port here (ant, humanoid) get robot_of's clear error
tasks.register((*ROBOTS, "ant", "humanoid"), make_env=make_locomotion_env, envpool=make_envpool_env)
