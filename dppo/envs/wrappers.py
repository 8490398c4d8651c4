"""The reference's wrapper stack: observation/action normalisation, the multi-step wrapper, Avoid's pixel
observation, and :func:`wrap`, which applies a config's ``env.wrappers`` block in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dppo.data.normalization import Normalization
from dppo.envs.raster import render_avoid_topdown


class NormalizeObsAction(gym.Wrapper):
    """obs -> {"state": 2((o - min)/(max - min + 1e-6) - 0.5)[, "rgb": ...]}; action in [-1, 1] ->
    (a + 1)/2 (max - min) + min. The env-specific wrappers of the reference (``d3il_lowdim``,
    ``mujoco_locomotion_lowdim``, ``robomimic_lowdim``, ``robomimic_image``) all reduce to this."""

    def __init__(self, env: gym.Env, normalization_path: str, clamp_obs: bool = False, **_: Any):
        super().__init__(env)
        self.norm = Normalization.load(normalization_path)
        self.clamp_obs = clamp_obs
        inner = env.observation_space
        state_space = inner["state"] if isinstance(inner, spaces.Dict) else inner
        if state_space.shape[-1] != self.norm.obs_min.shape[-1]:
            raise ValueError(f"normalization file {normalization_path}: obs_min has dim {self.norm.obs_min.shape[-1]} "
                             f"but the env's observation has dim {state_space.shape[-1]}")
        state = spaces.Box(-np.inf, np.inf, state_space.shape, np.float32)
        self.observation_space = spaces.Dict(
            {**(dict(inner.spaces) if isinstance(inner, spaces.Dict) else {}), "state": state})
        self.action_space = spaces.Box(-1.0, 1.0, env.action_space.shape, np.float32)

    def _obs(self, obs: Any) -> dict[str, np.ndarray]:
        out = dict(obs) if isinstance(obs, dict) else {"state": obs}
        state = self.norm.normalize_obs(np.asarray(out["state"], dtype=np.float32))
        out["state"] = np.clip(state, -1, 1) if self.clamp_obs else state.astype(np.float32)
        return out

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._obs(obs), info

    def step(self, action):
        raw = self.norm.unnormalize_action(np.asarray(action, dtype=np.float32))
        obs, reward, terminated, truncated, info = self.env.step(raw)
        return self._obs(obs), reward, terminated, truncated, info


class AvoidImageObs(gym.ObservationWrapper):
    """Avoid from pixels: raw obs [desired x, y, TCP x, y] -> {"state": desired xy (the "proprio", float32 (2,)),
    "rgb": top-down raster of the TCP (``dppo.envs.raster``), float32 (3, image_size, image_size) in [0, 255]}.
    Goes before the normalisation wrapper (``d3il_lowdim``), which then normalises the 2-D state only."""

    def __init__(self, env: gym.Env, image_size: int = 32, **_: Any):
        super().__init__(env)
        self.image_size = int(image_size)
        self.observation_space = spaces.Dict({
            "state": spaces.Box(-np.inf, np.inf, (2,), np.float32),
            "rgb": spaces.Box(0.0, 255.0, (3, self.image_size, self.image_size), np.float32)})

    def observation(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        rgb = render_avoid_topdown(obs[2:4][None], size=self.image_size)[0].astype(np.float32)
        return {"state": obs[:2].copy(), "rgb": rgb}


class MultiStep(gym.Wrapper):
    """Observation history of ``n_obs_steps`` and execution of ``n_action_steps`` actions per step.

    Executes the chunk's actions in order and stops at the first inner step that ends the episode; the
    reward is the sum over executed steps. ``truncated`` is set when the inner env truncates or after
    ``max_episode_steps`` inner steps. Unlike the reference (whose gym TimeLimit reported the time limit
    as terminated=True [quirk]), a time limit is reported as truncated only, so value bootstrapping is right.
    With ``reset_within_step`` the wrapper resets itself at episode end and puts the pre-reset stacked
    observation in ``info["final_obs"]``. ``pass_full_observations`` puts every executed inner observation
    (padded with the last one to n_action_steps rows) in ``info["full_obs"]``.
    """

    def __init__(self, env: gym.Env, n_obs_steps: int = 1, n_action_steps: int = 1,
                 max_episode_steps: int | None = None, reward_agg_method: str = "sum", prev_action: bool = True,
                 reset_within_step: bool = False, pass_full_observations: bool = False, **_: Any):
        super().__init__(env)
        if reward_agg_method != "sum":
            raise ValueError(f"multi_step.reward_agg_method '{reward_agg_method}' is not supported; use 'sum'")
        self.n_obs_steps, self.n_action_steps = n_obs_steps, n_action_steps
        self.max_episode_steps = max_episode_steps
        self.reset_within_step = reset_within_step
        self.pass_full_observations = pass_full_observations
        self.history: deque = deque(maxlen=max(n_obs_steps + 1, n_action_steps))
        self.elapsed = 0
        inner = env.observation_space
        inner = inner if isinstance(inner, spaces.Dict) else spaces.Dict({"state": inner})
        self.observation_space = spaces.Dict({
            k: spaces.Box(np.broadcast_to(s.low, (n_obs_steps, *s.shape)),
                          np.broadcast_to(s.high, (n_obs_steps, *s.shape)), dtype=s.dtype)
            for k, s in inner.spaces.items()})
        a = env.action_space
        self.action_space = spaces.Box(np.broadcast_to(a.low, (n_action_steps, *a.shape)),
                                       np.broadcast_to(a.high, (n_action_steps, *a.shape)), dtype=a.dtype)

    @staticmethod
    def _as_dict(obs: Any) -> dict[str, np.ndarray]:
        return dict(obs) if isinstance(obs, dict) else {"state": np.asarray(obs)}

    def _stacked(self) -> dict[str, np.ndarray]:
        recent = list(self.history)[-self.n_obs_steps:]
        recent = [recent[0]] * (self.n_obs_steps - len(recent)) + recent
        return {k: np.stack([o[k] for o in recent]) for k in recent[-1]}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.elapsed = 0
        self.history.clear()
        self.history.append(self._as_dict(obs))
        return self._stacked(), info

    def step(self, action):
        action = np.asarray(action).reshape(self.action_space.shape)
        total, terminated, truncated, info, full = 0.0, False, False, {}, []
        for a in action:
            obs, reward, terminated, truncated, info = self.env.step(a)
            self.elapsed += 1
            self.history.append(self._as_dict(obs))
            full.append(self.history[-1]["state"])
            total += float(reward)
            if self.max_episode_steps is not None and self.elapsed >= self.max_episode_steps and not terminated:
                truncated = True
            if terminated or truncated:
                break
        info = dict(info)
        if self.pass_full_observations:
            full += [full[-1]] * (self.n_action_steps - len(full))
            info["full_obs"] = np.stack(full)
        obs = self._stacked()
        if self.reset_within_step and (terminated or truncated):
            info["final_obs"] = obs
            obs, _ = self.reset()
        return obs, total, bool(terminated), bool(truncated), info


class ArrayNormalization:
    """:class:`NormalizeObsAction`'s arithmetic on batches of rows, for the batched envs that reproduce it
    (``AvoidVectorEnv``, ``ArrayMultiStepEnv``); they set ``norm`` and ``clamp_obs`` from the wrapper."""

    norm: Any = None
    clamp_obs = False

    def _normalize(self, raw: np.ndarray) -> np.ndarray:
        if self.norm is None:
            return np.asarray(raw)
        state = self.norm.normalize_obs(np.asarray(raw, dtype=np.float32))
        return np.clip(state, -1, 1) if self.clamp_obs else state.astype(np.float32)

    def _unnormalize(self, action: np.ndarray) -> np.ndarray:
        if self.norm is None:
            return action
        return self.norm.unnormalize_action(np.asarray(action, dtype=np.float32))


# config name -> wrapper; the reference's env-specific normalisation wrappers all reduce to NormalizeObsAction
WRAPPERS: dict[str, Callable[..., gym.Wrapper]] = {
    "d3il_lowdim": NormalizeObsAction,
    "mujoco_locomotion_lowdim": NormalizeObsAction,
    "robomimic_lowdim": NormalizeObsAction,
    "robomimic_image": NormalizeObsAction,
    "normalize": NormalizeObsAction,
    "avoid_image": AvoidImageObs,  # Avoid from pixels; before the normalisation wrapper (not batched)
    "multi_step": MultiStep,
}


def wrap(env: gym.Env, wrappers: Mapping[str, Mapping[str, Any]] | None) -> gym.Env:
    """Apply the config's wrappers in order."""
    for name, kwargs in (wrappers or {}).items():
        if name not in WRAPPERS:
            raise KeyError(f"env.wrappers.{name} is not a known wrapper; expected one of {sorted(WRAPPERS)}")
        env = WRAPPERS[name](env, **dict(kwargs or {}))
    return env
