"""GAE, running reward scaling, episode accounting, the multi-step wrapper and the LR schedule, against
hand-computed numbers."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from dppo.algos.advantage import gae
from dppo.envs.wrappers import MultiStep
from dppo.runners.episodes import episode_stats, first_episode_returns
from dppo.utils.reward_scaling import RunningRewardScaler
from dppo.utils.scheduler import CosineAnnealingWarmupRestarts


def test_gae_hand_computed():
    r = np.array([[1.0], [0.0], [2.0]], np.float32)
    v = np.array([[0.5], [0.4], [0.3]], np.float32)
    term = np.zeros((3, 1), np.float32)
    adv, ret = gae(r, v, np.array([0.2], np.float32), term, gamma=0.9, gae_lambda=0.8)
    # delta = [0.86, -0.13, 1.88]; A2 = 1.88, A1 = -0.13 + 0.72 * 1.88, A0 = 0.86 + 0.72 * A1
    np.testing.assert_allclose(adv[:, 0], [1.740992, 1.2236, 1.88], rtol=1e-5)
    np.testing.assert_allclose(ret, adv + v, rtol=1e-6)
    term[1] = 1.0  # a termination at step 1 stops bootstrapping and the recursion
    adv, _ = gae(r, v, np.array([0.2], np.float32), term, gamma=0.9, gae_lambda=0.8)
    np.testing.assert_allclose(adv[:, 0], [0.86 + 0.72 * -0.4, -0.4, 1.88], rtol=1e-5)


def test_gae_truncation_bootstraps_from_its_own_final_state():
    r = np.array([[1.0], [1.0]], np.float32)
    v = np.array([[0.0], [5.0]], np.float32)  # step 1 is the first state of the next episode
    trunc = np.array([[True], [False]])
    final = np.array([[2.0], [0.0]], np.float32)  # V of the state the first episode was truncated in
    adv, _ = gae(r, v, np.array([0.0], np.float32), np.zeros((2, 1), np.float32), 0.5, 1.0, trunc, final)
    np.testing.assert_allclose(adv[:, 0], [1.0 + 0.5 * 2.0 - 0.0, 1.0 - 5.0])
    quirk, _ = gae(r, v, np.array([0.0], np.float32), np.zeros((2, 1), np.float32), 0.5, 1.0)
    assert quirk[0, 0] == pytest.approx(1.0 + 0.5 * 5.0 + 0.5 * (1.0 - 5.0))  # the reference's value


def test_running_reward_scaler_matches_numpy():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(400, 3)).astype(np.float32)
    firsts = np.zeros((400, 3), np.float32)
    firsts[0] = 1
    firsts[200, 1] = 1
    scaler = RunningRewardScaler(3)
    scaled = scaler(rewards, firsts)
    g = np.zeros((400, 3))
    for i in range(400):
        g[i] = rewards[i] + 0.99 * (1 - firsts[i]) * (g[i - 1] if i else 0)
    # one batch from (mean 0, var 1, count 1e-4): M2 / (count - 1) is the pooled unbiased variance up to 1e-4
    var = np.var(g.reshape(-1), ddof=1)
    np.testing.assert_allclose(scaled, np.clip(rewards / np.sqrt(var), -10, 10), rtol=1e-3)
    np.testing.assert_allclose(scaler.returns, g[-1])


def test_episode_stats_counts_only_finished_episodes():
    rewards = np.array([[1, 0], [2, 0], [8, 3], [0, 1]], np.float32)
    firsts = np.array([[1, 1], [0, 0], [1, 0], [0, 1], [0, 0]], np.float32)
    s = episode_stats(rewards, firsts, act_steps=4, success_threshold=0.5)
    # env 0: episode [0, 2) = 1 + 2; [2, 4) unfinished. env 1: [0, 3) = 0 + 0 + 3; step 3 unfinished.
    assert s["num_episode"] == 2
    assert s["avg_episode_reward"] == pytest.approx(3.0)
    assert s["avg_best_reward"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert s["success_rate"] == pytest.approx(1.0)
    none = episode_stats(rewards[:1], firsts[:2], act_steps=4, success_threshold=0.5)
    assert none["num_episode"] == 0 and np.isnan(none["avg_episode_reward"]) and np.isnan(none["success_rate"])
    # first episodes: env 0 ends after step 1 (1 + 2), env 1 after step 2 (0 + 0 + 3)
    np.testing.assert_allclose(first_episode_returns(rewards, firsts), [3.0, 3.0])
    np.testing.assert_allclose(first_episode_returns(rewards[:2], firsts[:3]), [3.0])  # env 1 unfinished


class CountingEnv(gym.Env):
    """obs = number of steps taken, reward = the action, terminates after ``horizon`` steps."""

    def __init__(self, horizon=5):
        self.horizon = horizon
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Box(-10, 10, (1,), np.float32)

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), float(action[0]), self.t >= self.horizon, False, {}


def test_multi_step_history_reward_and_early_stop():
    env = MultiStep(CountingEnv(horizon=5), n_obs_steps=2, n_action_steps=3)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs["state"][:, 0], [0, 0])  # left-padded by repeating the oldest
    obs, r, term, trunc, _ = env.step(np.array([[1.0], [2.0], [3.0]]))
    assert r == 6.0 and not term and not trunc
    np.testing.assert_array_equal(obs["state"][:, 0], [2, 3])
    obs, r, term, trunc, _ = env.step(np.array([[1.0], [1.0], [100.0]]))  # ends after 2 of 3 actions
    assert r == 2.0 and term and not trunc
    np.testing.assert_array_equal(obs["state"][:, 0], [4, 5])


def test_multi_step_truncation_and_reset_within_step():
    env = MultiStep(CountingEnv(horizon=100), n_obs_steps=1, n_action_steps=2, max_episode_steps=3,
                    reset_within_step=True, pass_full_observations=True)
    env.reset()
    env.step(np.ones((2, 1)))
    obs, r, term, trunc, info = env.step(np.ones((2, 1)))  # the 3rd inner step hits the limit
    assert r == 1.0 and trunc and not term
    np.testing.assert_array_equal(info["final_obs"]["state"][:, 0], [3])
    np.testing.assert_array_equal(obs["state"][:, 0], [0])  # already reset
    np.testing.assert_array_equal(info["full_obs"][:, 0], [3, 3])  # one executed step, padded


def test_cosine_warmup_restart_schedule():
    s = CosineAnnealingWarmupRestarts(max_lr=1.0, first_cycle_steps=10, warmup_steps=2, min_lr=0.1)
    lrs = [s.lr] + [s.step() for _ in range(12)]
    assert lrs[0] == pytest.approx(0.1)  # min_lr right after construction
    assert lrs[1] == pytest.approx(0.55) and lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.1 + 0.9 * (1 + np.cos(np.pi * 4 / 8)) / 2)
    assert lrs[10] == pytest.approx(0.1) and lrs[11] == pytest.approx(0.55)  # restart after C steps


def test_cosine_schedule_without_warmup_starts_at_min_lr():
    """The reference sets min_lr after its constructor's own step, so W = 0 does not start at the maximum."""
    s = CosineAnnealingWarmupRestarts(max_lr=1.0, first_cycle_steps=4, warmup_steps=0, min_lr=0.2)
    lrs = [s.lr] + [s.step() for _ in range(5)]
    want = [0.2, 0.2 + 0.8 * (1 + np.cos(np.pi / 4)) / 2, 0.6, 0.2 + 0.8 * (1 + np.cos(3 * np.pi / 4)) / 2, 1.0]
    np.testing.assert_allclose(lrs[:5], want)  # a restart (s = 0 again) follows the formula
