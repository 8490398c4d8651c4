"""Episode bookkeeping of a rollout as the reference does it: returns, best chunk reward, success, counted
episodes."""

from __future__ import annotations

import numpy as np


def episode_stats(rewards: np.ndarray, firsts: np.ndarray, act_steps: int, success_threshold: float,
                  sparse_best: bool = False) -> dict[str, float]:
    """``rewards`` (n_steps, n_envs) chunk rewards; ``firsts`` (n_steps + 1, n_envs), firsts[0] = 1 after a
    reset and firsts[i + 1] = episode ended at step i. An episode spans the steps between two consecutive
    firsts and is counted only when it lasts more than one step; runs still going at the end are ignored.
    Best reward = max chunk reward / act_steps (``sparse_best``: the episode reward). Averages are NaN when
    no episode finished (curves then skip the point; the reference logged 0)."""
    returns, bests, lengths = [], [], []
    for env in range(rewards.shape[1]):
        starts = np.flatnonzero(firsts[:, env])
        for a, b in zip(starts[:-1], starts[1:]):
            if b - a > 1:
                r = rewards[a:b, env]
                returns.append(r.sum())
                bests.append(r.sum() if sparse_best else r.max() / act_steps)
                lengths.append((b - a) * act_steps)
    if not returns:  # NaN, not 0: a rollout in which no episode finished says nothing about returns
        return {"num_episode": 0, "avg_episode_reward": float("nan"), "avg_best_reward": float("nan"),
                "success_rate": float("nan"), "avg_episode_length": float("nan")}
    bests_a = np.asarray(bests)
    return {"num_episode": len(returns), "avg_episode_reward": float(np.mean(returns)),
            "avg_best_reward": float(bests_a.mean()), "success_rate": float((bests_a >= success_threshold).mean()),
            "avg_episode_length": float(np.mean(lengths))}


def first_episode_returns(rewards: np.ndarray, firsts: np.ndarray) -> np.ndarray:
    """Return of each env's first episode when it finished within the rollout (rollouts that start from a
    reset). Unlike ``episode_stats``, whose later episodes count only when they end early (a fall), this is
    an unbiased sample of full episodes: one per env."""
    out = []
    for env in range(rewards.shape[1]):
        ends = np.flatnonzero(firsts[1:, env])
        if firsts[0, env] and ends.size:
            out.append(rewards[:ends[0] + 1, env].sum())
    return np.asarray(out, np.float64)
