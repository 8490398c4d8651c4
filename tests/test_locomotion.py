"""Gym locomotion: reference names -> gymnasium v5 envs, and the normalisation + multi-step wrapper stack."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose as compose_cfg
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from dppo.data.normalization import Normalization
from dppo.envs.factory import make_env, wrap
from dppo.envs.locomotion import gymnasium_id, make_locomotion_env


@pytest.mark.parametrize("name, env_id", [
    ("hopper-medium-v2", "Hopper-v5"), ("hopper-v2", "Hopper-v5"), ("walker2d-medium-replay-v2", "Walker2d-v5"),
    ("walker2d-v2", "Walker2d-v5"), ("halfcheetah-medium-expert-v2", "HalfCheetah-v5"),
    ("halfcheetah-v2", "HalfCheetah-v5"), ("Hopper-v5", "Hopper-v5")])
def test_reference_names_map_to_v5(name, env_id):
    assert gymnasium_id(name) == env_id


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="hopper"):
        gymnasium_id("swimmer-medium-v2")


@pytest.mark.parametrize("name, obs_dim, action_dim", [
    ("hopper-medium-v2", 11, 3), ("walker2d-medium-v2", 17, 6), ("halfcheetah-medium-v2", 17, 6)])
def test_dims_match_d4rl(name, obs_dim, action_dim):
    env = make_env(name)  # through the lead's factory
    assert env.observation_space.shape == (obs_dim,)
    assert env.action_space.shape == (action_dim,)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    assert env.spec.max_episode_steps == 1000
    env.close()


def test_time_limit_is_truncation_not_termination():
    env = wrap(make_locomotion_env("hopper-medium-v2", max_episode_steps=8, terminate_when_unhealthy=False),
               {"multi_step": {"n_obs_steps": 1, "n_action_steps": 4, "max_episode_steps": 8}})
    env.reset(seed=0)
    flags = [env.step(np.zeros((4, 3), np.float32))[2:4] for _ in range(2)]
    assert flags == [(False, False), (False, True)]  # the reference's gym stack said terminated=True here


def test_normalisation_round_trip_through_wrappers(tmp_path):
    rng = np.random.default_rng(0)
    obs_min = -rng.uniform(1, 3, 11).astype(np.float32)
    obs_max = rng.uniform(1, 3, 11).astype(np.float32)
    norm = Normalization(obs_min, obs_max, np.full(3, -0.8, np.float32), np.full(3, 0.6, np.float32))
    path = tmp_path / "normalization.npz"
    norm.save(path)
    wrapped = wrap(make_env("hopper-medium-v2"), {
        "mujoco_locomotion_lowdim": {"normalization_path": str(path)},
        "multi_step": {"n_obs_steps": 2, "n_action_steps": 4, "max_episode_steps": 1000, "reset_within_step": True}})
    raw = make_locomotion_env("hopper-medium-v2")
    obs, _ = wrapped.reset(seed=7)
    raw_obs, _ = raw.reset(seed=7)
    assert obs["state"].shape == (2, 11)
    np.testing.assert_allclose(obs["state"][0], obs["state"][1])  # history left-padded by repetition
    np.testing.assert_allclose(obs["state"][-1], 2 * ((raw_obs - obs_min) / (obs_max - obs_min + 1e-6) - 0.5),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize_obs(obs["state"][-1]), raw_obs, rtol=1e-4, atol=1e-4)
    chunk = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
    obs, reward, terminated, truncated, _ = wrapped.step(chunk)
    raw_reward = 0.0
    for a in chunk:  # the wrapper must have executed (a + 1) / 2 * (max - min) + min, in order
        raw_obs, r, term, trunc, _ = raw.step((a + 1) / 2 * (0.6 + 0.8) - 0.8)
        raw_reward += r
        assert not (term or trunc)
    assert not (terminated or truncated)
    np.testing.assert_allclose(reward, raw_reward, rtol=1e-6)
    np.testing.assert_allclose(norm.unnormalize_obs(obs["state"][-1]), raw_obs, rtol=1e-4, atol=1e-4)
    wrapped.close()
    raw.close()


# ------------------------------------------------------------------------------------------ configs
CFG_DIR = Path(__file__).resolve().parents[1] / "cfg" / "gym"
GYM_CONFIGS = [(f"pretrain/{t}-medium-v2", "pre_diffusion_mlp") for t in ("hopper", "walker2d", "halfcheetah")] + [
    (f"finetune/{t}-v2", n) for t in ("hopper", "walker2d", "halfcheetah")
    for n in ("ft_ppo_diffusion_mlp", "sac_mlp")] + [
    (f"eval/{t}-v2", "eval_diffusion_mlp") for t in ("hopper", "walker2d", "halfcheetah")]


def compose(sub: str, name: str, overrides=()):
    with initialize_config_dir(config_dir=str(CFG_DIR / sub), version_base=None):
        cfg = compose_cfg(config_name=name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${now:...}
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg


@pytest.mark.parametrize("sub, name", GYM_CONFIGS)
def test_gym_configs_resolve(sub, name, monkeypatch):
    monkeypatch.setenv("DPPO_DATA_DIR", "/data")
    monkeypatch.setenv("DPPO_LOG_DIR", "/logs")
    cfg = compose(sub, name)
    robot = sub.split("/")[1].split("-")[0]
    assert cfg.obs_dim == {"hopper": 11}.get(robot, 17) and cfg.action_dim == {"hopper": 3}.get(robot, 6)
    assert cfg.logdir.startswith(f"/logs/gym-{sub.split('/')[0]}/")
    if name == "pre_diffusion_mlp":
        assert cfg.train_dataset.dataset_path == f"/data/gym/{robot}-medium-v2/train.npz"
        assert cfg.model.network.cond_dim == cfg.obs_dim and cfg.train.n_epochs == 3000
    else:
        assert cfg.env.wrappers.mujoco_locomotion_lowdim.normalization_path == \
            f"/data/gym/{robot}-medium-v2/normalization.npz"
        assert gymnasium_id(cfg.env.name).lower().startswith(robot)
    if name == "ft_ppo_diffusion_mlp":
        assert (cfg.env.n_envs, cfg.train.n_steps, cfg.train.batch_size) == (40, 500, 5000)
        assert cfg.model.network_path.endswith("state_3000.npz")
    if name == "sac_mlp":
        assert cfg.train.target_entropy == -cfg.action_dim


def test_sac_config_runs_on_hopper(tmp_path):
    norm = tmp_path / "normalization.npz"
    Normalization(-np.full(11, 5, np.float32), np.full(11, 5, np.float32), -np.ones(3, np.float32),
                  np.ones(3, np.float32)).save(norm)
    cfg = compose("finetune/hopper-v2", "sac_mlp", [
        f"normalization_path={norm}", f"logdir={tmp_path / 'run'}", "wandb=null", "train.n_train_itr=50",
        "train.n_explore_steps=40", "train.batch_size=16", "train.critic_replay_ratio=16",
        "train.actor_replay_ratio=16", "train.val_freq=50", "train.n_eval_episode=2", "env.max_episode_steps=30",
        "train.log_freq=10"])
    from dppo.runners.off_policy import TrainSACAgent

    result = TrainSACAgent(cfg).run()
    assert result["itr"] == 50 and np.isfinite(result["eval_return"])
    assert (tmp_path / "run" / "checkpoint" / "state_50.npz").is_file()
