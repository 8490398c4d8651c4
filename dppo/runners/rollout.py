"""Collecting chunk-level rollouts from a vector env with a compiled policy (shared by training and evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf

from dppo.data.normalization import Normalization
from dppo.envs.vector import AutoresetMode
from dppo.utils.cond import Cond


def as_cond(obs: dict[str, np.ndarray]) -> Cond:
    return {k: tf.convert_to_tensor(np.asarray(v, np.float32)) for k, v in obs.items()}


def _buffers(obs: dict[str, np.ndarray], firsts0: np.ndarray, n_steps: int, n_e: int) -> tuple:
    """Empty per-step arrays of a rollout: observations, rewards, terminated, truncated, final values,
    reset_after (truncated, and the env reset itself within the step) and firsts (firsts[0] = ``firsts0``)."""
    firsts = np.zeros((n_steps + 1, n_e), np.float32)
    firsts[0] = firsts0
    return ({k: np.zeros((n_steps, *np.shape(v)), np.float32) for k, v in obs.items()},
            np.zeros((n_steps, n_e), np.float32), np.zeros((n_steps, n_e), bool), np.zeros((n_steps, n_e), bool),
            np.zeros((n_steps, n_e), np.float32), np.zeros((n_steps, n_e), bool), firsts)


def rollout(venv: gym.vector.VectorEnv, act: Callable[[Cond], tuple[tf.Tensor, tf.Tensor | None]],
            obs: dict[str, np.ndarray], firsts0: np.ndarray, n_steps: int, act_steps: int,
            value_fn: Callable[[Cond], tf.Tensor] | None = None, keep_next_obs: bool = False) -> dict[str, Any]:
    """Run ``n_steps`` policy steps in all envs. ``act(cond) -> (chunk (N, T_p, D_a), sample to store or None)``;
    the first ``act_steps`` actions of each chunk are executed. ``value_fn`` evaluates V on the final
    observation of episodes that were truncated (for bootstrapping). ``firsts`` (n_steps + 1, N) follows the
    reference: firsts[0] = ``firsts0``, firsts[i + 1] = episode ended at step i. With ``keep_next_obs`` the
    result also holds ``next_obs`` (n_steps, N, ...): the observation each step led to, before any reset - the
    episode's final observation (``info["final_obs"]``) where the env reset itself within the step; the
    observation the policy sees next is never modified.

    A :class:`dppo.envs.split.SplitVectorEnv` (``env.overlap``) is stepped one half at a time in its worker
    thread while ``act`` samples for the other half (:func:`rollout_overlapped`)."""
    if getattr(venv, "halves", None) is not None:
        if keep_next_obs:
            raise ValueError("env.overlap does not keep next observations (replay-based runners): set it false")
        return rollout_overlapped(venv, act, obs, firsts0, n_steps, act_steps, value_fn)
    if venv.metadata.get("autoreset_mode") not in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
        raise ValueError(f"rollout needs a vector env with autoreset mode SameStep or Disabled "
                         f"(dppo.envs.vector), got {venv.metadata.get('autoreset_mode')!r}")
    n_e = venv.num_envs
    obs_buf, rewards, terminated, truncated, final_values, reset_after, firsts = _buffers(obs, firsts0, n_steps, n_e)
    samples = None
    next_buf = {k: np.zeros_like(v) for k, v in obs_buf.items()} if keep_next_obs else None
    full_obs = []
    for step in range(n_steps):
        for k, v in obs.items():
            obs_buf[k][step] = v
        action, sample = act(as_cond(obs))
        if sample is not None:
            if samples is None:
                samples = np.zeros((n_steps, *sample.shape), np.float32)
            samples[step] = sample.numpy()
        obs, reward, term, trunc, info = venv.step(action.numpy()[:, :act_steps])
        rewards[step], terminated[step], truncated[step] = reward, term, trunc
        firsts[step + 1] = term | trunc
        ended = trunc & ~term
        if value_fn is not None and ended.any() and "final_obs" in info:
            rows = np.flatnonzero(ended & info["_final_obs"])
            if len(rows):
                reset_after[step, rows] = True
                # always n_e rows (padded with repeats), so the compiled value function sees one shape and is
                # traced once, not again whenever a new number of envs truncates at once
                padded = np.concatenate([rows, np.full(n_e - len(rows), rows[0])])
                v = value_fn(as_cond({k: x[padded] for k, x in info["final_obs"].items()}))
                final_values[step, rows] = np.asarray(v)[:len(rows)]
        if next_buf is not None:
            for k in next_buf:
                next_buf[k][step] = obs[k]
            if "final_obs" in info:
                rows = np.flatnonzero(info["_final_obs"])
                for k in next_buf:
                    next_buf[k][step, rows] = info["final_obs"][k][rows]
        if "full_obs" in info:
            full_obs.append(info["full_obs"])
    return {"obs": obs_buf, "samples": samples, "rewards": rewards, "terminated": terminated, "truncated": truncated,
            "final_values": final_values, "reset_after": reset_after, "firsts": firsts, "last_obs": obs,
            "full_obs": np.concatenate(full_obs, axis=1) if full_obs else None,
            **({"next_obs": next_buf} if next_buf is not None else {})}


def rollout_overlapped(venv: Any, act: Callable[[Cond], tuple[tf.Tensor, tf.Tensor | None]],
                       obs: dict[str, np.ndarray], firsts0: np.ndarray, n_steps: int, act_steps: int,
                       value_fn: Callable[[Cond], tf.Tensor] | None = None) -> dict[str, Any]:
    """:func:`rollout` over the halves of a ``SplitVectorEnv``, pipelined: at each step, for each half in turn,
    wait for its previous env step, sample its actions, and hand its env step to the worker thread; so half A's
    env step runs while the policy samples for half B, and B's while it samples A's next actions. Same outputs
    as :func:`rollout` for the same ``act`` results (``tests/test_overlap.py`` checks it with a deterministic
    policy); only ``act`` is called per half."""
    n_e = venv.num_envs
    bounds = list(zip(venv.offsets[:-1], venv.offsets[1:]))
    obs_buf, rewards, terminated, truncated, final_values, reset_after, firsts = _buffers(obs, firsts0, n_steps, n_e)
    samples = None
    full_obs: np.ndarray | None = None
    group_obs = [{k: np.asarray(v)[a:b] for k, v in obs.items()} for a, b in bounds]

    def record(step: int, g: int, result) -> None:
        nonlocal full_obs
        a, b = bounds[g]
        o, reward, term, trunc, info = result
        group_obs[g] = o
        rewards[step, a:b], terminated[step, a:b], truncated[step, a:b] = reward, term, trunc
        firsts[step + 1, a:b] = term | trunc
        ended = trunc & ~term
        if value_fn is not None and ended.any() and "final_obs" in info:
            rows = np.flatnonzero(ended & info["_final_obs"])
            if len(rows):
                reset_after[step, a + rows] = True
                padded = np.concatenate([rows, np.full(n_e - len(rows), rows[0])])  # one traced shape: n_e rows
                v = value_fn(as_cond({k: x[padded] for k, x in info["final_obs"].items()}))
                final_values[step, a + rows] = np.asarray(v)[:len(rows)]
        if "full_obs" in info:
            if full_obs is None:
                full_obs = np.zeros((n_e, n_steps * info["full_obs"].shape[1], *info["full_obs"].shape[2:]),
                                    info["full_obs"].dtype)
            t_a = info["full_obs"].shape[1]
            full_obs[a:b, step * t_a:(step + 1) * t_a] = info["full_obs"]

    pending: dict[int, Any] = {}
    for step in range(n_steps):
        for g, (a, b) in enumerate(bounds):
            if g in pending:
                record(step - 1, g, pending.pop(g).result())
            for k, v in group_obs[g].items():
                obs_buf[k][step, a:b] = v
            action, sample = act(as_cond(group_obs[g]))
            if sample is not None:
                if samples is None:
                    samples = np.zeros((n_steps, n_e, *sample.shape[1:]), np.float32)
                samples[step, a:b] = sample.numpy()
            pending[g] = venv.executor.submit(venv.halves[g].step, action.numpy()[:, :act_steps])
    for g in sorted(pending):
        record(n_steps - 1, g, pending.pop(g).result())
    last_obs = {k: np.concatenate([o[k] for o in group_obs]) for k in group_obs[0]}
    return {"obs": obs_buf, "samples": samples, "rewards": rewards, "terminated": terminated, "truncated": truncated,
            "final_values": final_values, "reset_after": reset_after, "firsts": firsts, "last_obs": last_obs,
            "full_obs": full_obs}


def full_states(ro: dict[str, Any]) -> np.ndarray | None:
    """(N, T, D) normalised states per env: the first observation, then every executed env step (None unless the
    env passes full observations: ``env.save_full_observations``)."""
    if ro["full_obs"] is None:
        return None
    return np.concatenate([ro["obs"]["state"][0, :, -1][:, None], ro["full_obs"]], axis=1)


def raw_paths(ro: dict[str, Any], normalization: Normalization | None) -> list[np.ndarray]:
    """Per-env unnormalised state paths (first observation, then every executed env step), for plots."""
    states = full_states(ro)
    if states is None or normalization is None:
        return []
    raw = normalization.unnormalize_obs(states)
    return [raw[e] for e in range(raw.shape[0])]
