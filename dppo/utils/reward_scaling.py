"""Running reward scaling (the reference's RunningRewardScaler): divide rewards by the running std of a
discounted return."""

from __future__ import annotations

import numpy as np


class RunningMeanStd:
    """Parallel (Chan et al.) running mean/variance, initial mean 0, var 1, count 1e-4.

    ``unbiased_merge=True`` reproduces the reference, whose merged variance divides M2 by (count - 1)
    [quirk: with the tiny initial count this is close to M2 / count after the first batch]."""

    def __init__(self, shape: tuple = (), unbiased_merge: bool = True):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4
        self.unbiased_merge = unbiased_merge

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        b_mean, b_var, b_count = x.mean(axis=0), x.var(axis=0), x.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.mean = self.mean + delta * b_count / total
        self.var = m2 / (total - 1) if self.unbiased_merge else m2 / total
        self.count = total


class RunningRewardScaler:
    """Per env G <- r + gamma (1 - first) G (gamma fixed at 0.99 as in the reference); the pooled G values
    update a running variance; scaled reward = clip(r / sqrt(var + 1e-8), -10, 10) (no mean subtraction)."""

    def __init__(self, n_envs: int, gamma: float = 0.99, clip: float = 10.0, epsilon: float = 1e-8):
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon
        self.returns = np.zeros(n_envs, np.float64)
        self.rms = RunningMeanStd()

    def __call__(self, rewards: np.ndarray, firsts: np.ndarray) -> np.ndarray:
        """Scale (n_steps, n_envs) rewards; ``firsts[i]`` marks that step i starts a new episode."""
        seen = np.empty_like(rewards, dtype=np.float64)
        for i in range(len(rewards)):
            self.returns = rewards[i] + self.gamma * (1.0 - firsts[i]) * self.returns
            seen[i] = self.returns
        self.rms.update(seen.reshape(-1))
        return np.clip(rewards / np.sqrt(self.rms.var + self.epsilon), -self.clip, self.clip).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"returns": self.returns, "mean": self.rms.mean, "var": self.rms.var, "count": self.rms.count}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.returns = np.array(state["returns"], np.float64)
        self.rms.mean, self.rms.var = np.array(state["mean"]), np.array(state["var"])
        self.rms.count = float(state["count"])
