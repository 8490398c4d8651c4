"""A two-step bandit for learning checks: observation [t], reward 1 - sum_d |a_d - 0.6| (best action 0.6 in both
dims, return 2 at best); an episode lasts two steps, since the reference counts only episodes longer than one
chunk. Tests and ``script/replay_baselines_bandit.py`` register it under their own gymnasium ids."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class TwoStepBandit(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, np.float32), float(1 - np.abs(action - 0.6).sum()), self.t == 2, False, {}
