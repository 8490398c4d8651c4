"""Every vector env is a gymnasium VectorEnv that declares its autoreset mode, and honours it."""

import gymnasium as gym
import numpy as np
import pytest

from dppo.envs.factory import make_vector_env
from dppo.envs.vector import AutoresetMode, SyncVectorEnv
from dppo.runners.off_policy import replay_envs, step_states
from dppo.runners.rollout import rollout


class Countdown(gym.Env):
    """Episode of 3 steps; obs = [steps taken, episode index]."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self.t, self.episode = 0, -1

    def reset(self, seed=None, options=None):
        self.t, self.episode = 0, self.episode + 1
        return np.array([0.0, self.episode], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, self.episode], np.float32), 1.0, self.t == 3, False, {}


def test_sync_env_is_a_gymnasium_vector_env_with_declared_mode():
    venv = SyncVectorEnv([Countdown] * 2)
    assert isinstance(venv, gym.vector.VectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED  # the envs do not reset themselves
    assert venv.observation_space.shape == (2, 2) and venv.action_space.shape == (2, 1)
    with pytest.raises(ValueError, match="NextStep"):
        SyncVectorEnv([Countdown], AutoresetMode.NEXT_STEP)


def test_same_step_resets_in_the_step_and_reports_the_final_obs():
    venv = SyncVectorEnv([Countdown] * 2, "SameStep")
    venv.reset(seed=0)
    a = np.zeros((2, 1), np.float32)
    for _ in range(2):
        obs, _, term, _, info = venv.step(a)
        assert not term.any() and "final_obs" not in info
    obs, _, term, _, info = venv.step(a)
    assert term.all() and info["_final_obs"].all()
    np.testing.assert_array_equal(info["final_obs"], [[3, 0], [3, 0]])  # last obs of episode 0
    np.testing.assert_array_equal(obs, [[0, 1], [0, 1]])  # first obs of episode 1


def test_disabled_does_not_reset():
    venv = SyncVectorEnv([Countdown], AutoresetMode.DISABLED)
    venv.reset()
    for _ in range(4):
        obs, _, _, _, info = venv.step(np.zeros((1, 1), np.float32))
    assert "final_obs" not in info and obs[0, 1] == 0  # still episode 0, stepped past its end


def multi_step(reset_within_step):
    return {"multi_step": {"n_obs_steps": 1, "n_action_steps": 2, "max_episode_steps": 6,
                           "reset_within_step": reset_within_step}}


@pytest.mark.parametrize("batched", [False, True])
def test_factory_modes_for_avoid(batched):
    off = make_vector_env("avoiding-m5", 2, multi_step(False), batched=batched)
    on = make_vector_env("avoiding-m5", 2, multi_step(True), batched=batched)
    forced = make_vector_env("avoiding-m5", 2, multi_step(False), batched=batched, autoreset_mode="SameStep")
    assert type(off).__name__ == ("AvoidVectorEnv" if batched else "SyncVectorEnv")
    assert isinstance(off, gym.vector.VectorEnv)
    assert off.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    assert on.metadata["autoreset_mode"] == forced.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    # 6 inner steps = 3 chunk steps: the third ends the episode and resets within the step
    forced.reset(seed=0)
    for _ in range(3):
        obs, _, _, trunc, next_obs = step_states(forced, np.full((2, 2, 2), 0.01, np.float32))
    assert trunc.all() and not np.allclose(obs, next_obs)


def test_replay_envs_are_same_step_and_rollout_refuses_next_step():
    envs = replay_envs("avoiding-m5", 2, multi_step(False), seed=0)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    foreign = gym.vector.SyncVectorEnv([Countdown])  # gymnasium's default: NextStep
    with pytest.raises(ValueError, match="autoreset mode"):
        rollout(foreign, lambda c: None, {"state": np.zeros((1, 1, 2))}, np.ones(1), 1, 1)
