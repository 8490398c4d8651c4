"""Metric names shared by every runner's ``metrics.csv`` / TensorBoard scalars, so plots and comparisons read
any run the same way.

* ``env_steps``: cumulative env steps (actions executed) at the end of the logged iteration;
* ``train/<stat>``, ``eval/<stat>``: episode statistics of training rollouts and deterministic evaluations,
  stat in :data:`EPISODE_STATS` (``dppo.runners.episodes.episode_stats``; ``eval/std_episode_reward`` too
  where a runner evaluates whole episodes);
* ``loss/<name>``: losses and learner diagnostics (``loss/alpha`` for a learned temperature);
* ``time/wall``, ``time/rollout``, ``time/update`` (seconds), ``lr/actor``, ``lr/critic``.
"""

from __future__ import annotations

ENV_STEPS = "env_steps"
WALL = "time/wall"
EPISODE_STATS = ("num_episode", "avg_episode_reward", "avg_best_reward", "success_rate", "avg_episode_length")
TRAIN_RETURN = "train/avg_episode_reward"
EVAL_RETURN = "eval/avg_episode_reward"
EVAL_RETURN_STD = "eval/std_episode_reward"
EVAL_SUCCESS = "eval/success_rate"


def episode_metrics(prefix: str, stats: dict[str, float]) -> dict[str, float]:
    """``{prefix/stat: value}`` for ``prefix`` "train" or "eval"."""
    if prefix not in ("train", "eval"):
        raise ValueError(f"metric prefix must be 'train' or 'eval', got {prefix!r}")
    return {f"{prefix}/{k}": v for k, v in stats.items()}
