"""The batched Avoid vector env gives exactly what SyncVectorEnv of MultiStep(NormalizeObsAction(AvoidEnv)) gives."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from dppo.envs.avoid_vector import AvoidVectorEnv
from dppo.envs.factory import make_from_config, make_vector_env
from dppo.envs.vector import SyncVectorEnv


def wrappers(norm, n_obs=1, n_act=4, max_steps=100, reset_within_step=False, full=True, clamp=False):
    return {"d3il_lowdim": {"normalization_path": norm, "clamp_obs": clamp},
            "multi_step": {"n_obs_steps": n_obs, "n_action_steps": n_act, "max_episode_steps": max_steps,
                           "pass_full_observations": full, "reset_within_step": reset_within_step}}


def assert_same(a, b, where):
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    np.testing.assert_array_equal(a, b, err_msg=where)


def run_both(name, wraps, n_envs, n_steps, seed=0, env_kwargs=None, resets=()):
    sync = make_vector_env(name, n_envs, wraps, seed=3, env_kwargs=env_kwargs, batched=False)
    batched = make_vector_env(name, n_envs, wraps, seed=3, env_kwargs=env_kwargs, batched=True)
    assert isinstance(sync, SyncVectorEnv) and isinstance(batched, AvoidVectorEnv)
    assert sync.single_observation_space == batched.single_observation_space
    assert sync.single_action_space == batched.single_action_space
    n_act = wraps["multi_step"]["n_action_steps"]
    rng = np.random.default_rng(seed)
    # drift to +y (normalised y action in [-1, 1] maps to [0, 0.0125]) with wide x noise: paths cross the rows,
    # hit pillars and leave the workspace
    actions = rng.uniform(-1, 1, (n_steps, n_envs, n_act, 2)).astype(np.float32)
    actions[..., 0] *= 3.0
    assert_same(sync.reset(seed=7)[0], batched.reset(seed=7)[0], "reset")
    n_final = 0
    for t in range(n_steps):
        if t in resets:
            assert_same(sync.reset(seed=t)[0], batched.reset(seed=t)[0], f"reset at {t}")
        out_s, out_b = sync.step(actions[t]), batched.step(actions[t])
        for name_, a, b in zip(("obs", "reward", "terminated", "truncated", "info"), out_s, out_b):
            assert_same(a, b, f"step {t} {name_}")
        n_final += int("final_obs" in out_s[4])
    return n_final


def test_demo_stack_matches_sync_bit_for_bit(avoid_norm):
    # the Avoid M2 config: 4 act steps, 100-step episodes (25 chunks), full observations, no reset within step;
    # 30 chunks step past the time limit, and the envs are reset mid-way as the runner does at iterations
    run_both("avoiding-m5", wrappers(avoid_norm), n_envs=6, n_steps=30, resets=(26,))


def test_history_mid_chunk_truncation_and_reset_within_step(avoid_norm):
    # 2-step observation history, 3 act steps and a 10-step limit: episodes end mid-chunk and reset in place
    n_final = run_both("avoiding-m7", wrappers(avoid_norm, n_obs=2, n_act=3, max_steps=10, reset_within_step=True,
                                               clamp=True), n_envs=5, n_steps=12, seed=1)
    assert n_final == 3


@pytest.mark.parametrize("kwargs", [{"tracker": "delay"}, {"tracker": "perfect", "pillars": "freeze"},
                                    {"pillars": "pass"}, {"stale_obs": False, "max_episode_steps": 9}])
def test_env_options_and_env_ids(avoid_norm, kwargs):
    run_both("avoiding-m6", wrappers(avoid_norm, n_act=2, full=False, reset_within_step=True), n_envs=4,
             n_steps=8, seed=2, env_kwargs=kwargs)


def test_factory_flag(avoid_norm):
    cfg = OmegaConf.create({"name": "avoiding-m5", "n_envs": 3, "wrappers": wrappers(avoid_norm)})
    assert isinstance(make_from_config(cfg, 0), AvoidVectorEnv)  # batched by default
    cfg.batched = False
    assert isinstance(make_from_config(cfg, 0), SyncVectorEnv)
    # a stack the batched env does not reproduce falls back to the sync env
    only_norm = {"d3il_lowdim": {"normalization_path": avoid_norm}}
    assert isinstance(make_vector_env("avoiding-m5", 2, only_norm), SyncVectorEnv)


def test_sync_reset_takes_one_options_dict_per_env():
    import gymnasium as gym

    class Recorder(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def reset(self, seed=None, options=None):
            self.options = options
            return np.zeros(1, np.float32), {}

    venv = SyncVectorEnv([Recorder] * 3)
    venv.reset(seed=0, options=[{"video_path": "a.mp4"}, {}, {}])
    assert [e.options for e in venv.envs] == [{"video_path": "a.mp4"}, {}, {}]
    venv.reset(options={"x": 1})
    assert [e.options for e in venv.envs] == [{"x": 1}] * 3
    with pytest.raises(ValueError):
        venv.reset(options=[{}])
