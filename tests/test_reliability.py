"""Reliability of the runners: resume and base-policy checks against what checkpoints record, dims checked before
the first step, metrics rows that never disagree with checkpoints, the divergence guard, degenerate normalisation
and write errors that name their file. (Kills of real processes: test_kill_resume.py; fuzzed loaders:
test_fuzz_loaders.py.)"""

import errno
import logging

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces
from omegaconf import OmegaConf
from test_finetune_runner import avoid_cfg, ppo_cfg
from test_pretrain import pretrain_cfg

from dppo.data.normalization import DatasetError, Normalization
from dppo.runners.ppo import TrainPPODiffusionAgent
from dppo.runners.pretrain import TrainDiffusionAgent
from dppo.utils import checkpoint as ckpt
from dppo.utils.guard import DivergenceError, DivergenceGuard, GuardSettings
from dppo.utils.logging import MetricLogger
from dppo.utils.validate import ConfigError


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tiny_pretrain(data, logdir, n_epochs=2, **train):
    cfg = pretrain_cfg(data, logdir, n_epochs=n_epochs, **{"save_model_freq": 1, **train})
    cfg.model.network.mlp_dims = [16, 16, 16]
    return cfg


# ------------------------------------------------------------------------------------------ resume and base checks
def test_refused_pretraining_resume_names_the_key_and_writes_nothing(two_mode_dataset, tmp_path):
    cfg = tiny_pretrain(two_mode_dataset, tmp_path / "run")
    TrainDiffusionAgent(cfg).run()
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint" / "state_2.npz")
    assert ckpt.meta(state, "denoising_steps") == 20 and ckpt.meta(state, "obs_dim") == 2  # recorded for checks
    before = snapshot(tmp_path / "run")
    cfg.resume, cfg.train.n_epochs = True, 4
    cfg.model.network.mlp_dims = [8, 8, 8]
    with pytest.raises(ConfigError, match=r"^model\.network\.mlp_dims: .* started with \[16, 16, 16\], the config "
                                          r"now has \[8, 8, 8\]"):
        TrainDiffusionAgent(cfg)
    cfg.model.network.mlp_dims = [16, 16, 16]
    cfg.denoising_steps = cfg.model.denoising_steps = 10
    with pytest.raises(ConfigError, match=r"^denoising_steps: .* started with 20, the config now has 10"):
        TrainDiffusionAgent(cfg)
    assert snapshot(tmp_path / "run") == before  # config.yaml, metrics and checkpoints untouched


def test_fine_tuning_refuses_a_policy_pretrained_with_other_denoising_steps(two_mode_dataset, tmp_path):
    TrainDiffusionAgent(tiny_pretrain(two_mode_dataset, tmp_path / "pre", n_epochs=1)).run()
    cfg = ppo_cfg(tmp_path / "ft", "DppoTestBandit-v0", 2, 2, {}, **{
        "denoising_steps": 10, "model.denoising_steps": 10, "horizon_steps": 1, "act_steps": 1,
        "model.horizon_steps": 1, "model.actor.horizon_steps": 1})
    cfg.model.network_path = str(tmp_path / "pre" / "checkpoint" / "state_1.npz")
    with pytest.raises(ConfigError, match=r"^model\.denoising_steps: the checkpoint .*state_1\.npz was trained with "
                                          r"20, the config has 10$"):
        TrainPPODiffusionAgent(cfg)
    assert not (tmp_path / "ft").exists()


def test_refused_fine_tuning_resume_k_prime_and_n_envs(tmp_path, avoid_norm):
    cfg = avoid_cfg(tmp_path / "run", avoid_norm, **{"train.n_train_itr": 1})
    TrainPPODiffusionAgent(cfg).run()
    before = snapshot(tmp_path / "run")
    cfg.resume, cfg.train.n_train_itr = True, 2
    cfg.ft_denoising_steps = cfg.model.ft_denoising_steps = 3
    with pytest.raises(ConfigError, match=r"^ft_denoising_steps: .* started with 4, the config now has 3"):
        TrainPPODiffusionAgent(cfg)
    cfg.ft_denoising_steps = cfg.model.ft_denoising_steps = 4
    cfg.env.n_envs = 5
    with pytest.raises(ConfigError, match=r"^env\.n_envs: .* started with 4, the config now has 5"):
        TrainPPODiffusionAgent(cfg)
    assert snapshot(tmp_path / "run") == before


# ------------------------------------------------------------------------------------------ dims
def test_pretraining_checks_data_dims_before_the_first_epoch(two_mode_dataset, tmp_path):
    cfg = tiny_pretrain(two_mode_dataset, tmp_path / "run")
    cfg.obs_dim = cfg.model.obs_dim = cfg.model.network.cond_dim = 3
    with pytest.raises(DatasetError, match="states have dim 2, config obs_dim is 3"):
        TrainDiffusionAgent(cfg)
    assert not (tmp_path / "run").exists()


def test_unknown_keys_of_model_and_network_blocks_are_config_errors(two_mode_dataset, tmp_path):
    for key, message in (("model.foo", r"^model\.foo: unknown key \(TypeError"),
                         ("model.network.foo", r"^model\.network\.foo: unknown key \(ValueError")):
        cfg = tiny_pretrain(two_mode_dataset, tmp_path / "run")
        OmegaConf.update(cfg, key, 1, force_add=True)
        with pytest.raises(ConfigError, match=message):
            TrainDiffusionAgent(cfg)
    assert not (tmp_path / "run").exists()


def test_top_level_cond_steps_reaches_the_model(two_mode_dataset, tmp_path):
    cfg = tiny_pretrain(two_mode_dataset, tmp_path / "run", n_epochs=1)
    cfg.cond_steps = cfg.train_dataset.cond_steps = 2
    cfg.model.network.cond_dim = 4  # what ${eval:'${obs_dim} * ${cond_steps}'} gives in the shipped configs
    agent = TrainDiffusionAgent(cfg)
    assert agent.model.cond_steps == 2
    assert np.isfinite(agent.run()["loss"])


# ------------------------------------------------------------------------------------------ metrics vs checkpoints
def test_metrics_row_is_on_disk_before_its_checkpoint_and_resume_truncates(two_mode_dataset, tmp_path, monkeypatch):
    cfg = tiny_pretrain(two_mode_dataset, tmp_path / "run", n_epochs=3)
    save = ckpt.save_checkpoint

    def failing_save(path, *args, **kwargs):
        if path.name == "state_2.npz":
            raise RuntimeError("killed")
        return save(path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", failing_save)
    with pytest.raises(RuntimeError, match="killed"):
        TrainDiffusionAgent(cfg).run()
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    logged = MetricLogger(tmp_path / "run").rows
    assert [r["step"] for r in logged] == ["1", "2"]  # row 2 is durable although state_2 was never written
    cfg.resume = True
    resumed = TrainDiffusionAgent(cfg)
    assert resumed.epoch == 1
    resumed.run()
    rows = MetricLogger(tmp_path / "run").rows
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["loss/loss"] == logged[1]["loss/loss"]  # epoch 2 ran again, exactly


def test_half_written_last_row_is_dropped_and_rows_past_the_checkpoint_truncated(tmp_path, caplog):
    (tmp_path / "metrics.csv").write_text("step,loss\r\n0,1.5\r\n1,1.25\r\n2,1.0\r\n3,0.9")  # killed mid-row
    (tmp_path / "metrics.csv.tmp").write_text("step,loss\r\n0,")  # killed mid-rewrite
    with caplog.at_level(logging.WARNING):
        logger = MetricLogger(tmp_path)
    assert [r["step"] for r in logger.rows] == ["0", "1", "2"] and "incomplete" in caplog.text
    assert not (tmp_path / "metrics.csv.tmp").exists()
    logger.truncate(1)
    logger.log(2, {"loss": 0.5})
    logger.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,loss", "0,1.5", "1,1.25", "2,0.5"]


def test_stale_temporary_checkpoint_files_are_removed(tmp_path):
    var = tf.Variable(np.ones(3, np.float32))
    ckpt.save_checkpoint(tmp_path / "state_1.npz", {"w": [var]})
    stale = [tmp_path / ".state_2.x1y2.tmp.npz", tmp_path / "config.yaml.tmp"]
    for p in stale:
        p.write_bytes(b"PK\x03\x04 half written")
    assert ckpt.latest_checkpoint(tmp_path).name == "state_1.npz"  # never mistaken for a checkpoint
    assert ckpt.remove_stale_temporaries(tmp_path) == sorted(stale) and not any(p.exists() for p in stale)
    assert ckpt.latest_checkpoint(tmp_path).name == "state_1.npz"


def test_write_errors_name_the_file_and_keep_the_previous_checkpoint(tmp_path, monkeypatch):
    var = tf.Variable(np.ones(3, np.float32))
    path = ckpt.save_checkpoint(tmp_path / "state_1.npz", {"w": [var]})
    good = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match=r"could not write .*state_1\.npz: No space left on device \(the disk is full\)"):
        ckpt.save_checkpoint(path, {"w": [var]})
    assert path.read_bytes() == good and list(tmp_path.iterdir()) == [path]


# ------------------------------------------------------------------------------------------ divergence
def test_guard_flags_non_finite_values_and_finite_jumps():
    guard = DivergenceGuard("pre-training", "epoch", "lower train.learning_rate", lambda: None)
    for step, loss in enumerate([1.0, 0.8, 0.9, 0.7]):
        guard.check_update(step, loss, 10.0 + step)
    guard.check_update(4, 50.0, 12.0)  # a bump far below 1e3 x median passes
    with pytest.raises(DivergenceError, match=r"epoch 5: the loss jumped to 1e\+18.*source: the update.*likely cause: "
                                              r"lower train\.learning_rate; no checkpoint had been written"):
        guard.check_update(5, 1e18, 12.0)
    with pytest.raises(DivergenceError, match="the weight norm jumped to 1e\\+06"):
        guard.check_update(5, 1.0, 1e6)
    with pytest.raises(DivergenceError, match="the loss is nan"):
        guard.check_update(5, float("nan"), 12.0)
    relaxed = DivergenceGuard("x", "epoch", "c", lambda: None, GuardSettings.from_config(None, present=True))
    for step, loss in enumerate([1.0, 1.0, 1.0, 1e18]):
        relaxed.check_update(step, loss, 1e6 ** step)  # divergence_guard: null -> only non-finite values stop
    assert GuardSettings.from_config({"loss_factor": 10}, present=True).loss_factor == 10.0


def test_finite_blow_up_stops_pretraining_and_keeps_the_last_good_checkpoint(two_mode_dataset, tmp_path):
    agent = TrainDiffusionAgent(tiny_pretrain(two_mode_dataset, tmp_path / "run", n_epochs=6))
    epoch_fn = agent._train_epoch

    def blowing_up(order):
        loss = epoch_fn(order)
        if agent.epoch == 4:  # the weights explode to ~1e6 (finite), as with a far too large learning rate
            for v in agent.variables:
                v.assign(v * 1e6)
        return loss

    agent._train_epoch = blowing_up
    with pytest.raises(DivergenceError, match=r"epoch 4: the weight norm jumped .*state_3\.npz is kept"):
        agent.run()
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoint").name == "state_3.npz"
    assert [r["step"] for r in MetricLogger(tmp_path / "run").rows] == ["1", "2", "3"]


class NaNRewardBandit(gym.Env):
    """Reward NaN at the 4th step of the third env created (the vector env creates envs 0, 1, 2, ... in order)."""

    observation_space = spaces.Box(-1, 1, (1,), np.float32)
    action_space = spaces.Box(-1, 1, (2,), np.float32)
    created = 0

    def __init__(self):
        self.index, self.steps = NaNRewardBandit.created, 0
        NaNRewardBandit.created += 1

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.steps += 1
        reward = float("nan") if (self.index % 4, self.steps) == (2, 4) else 0.0
        return np.zeros(1, np.float32), reward, False, False, {}


gym.register("DppoTestNaNReward-v0", entry_point=NaNRewardBandit)


def test_nan_from_the_env_is_blamed_on_the_env_with_its_index_and_step(tmp_path):
    NaNRewardBandit.created = 0
    cfg = ppo_cfg(tmp_path / "run", "DppoTestNaNReward-v0", 1, 2,
                  {"multi_step": {"n_obs_steps": 1, "n_action_steps": 1}}, **{"act_steps": 1})
    agent = TrainPPODiffusionAgent(cfg)
    with pytest.raises(DivergenceError, match=r"iteration 0: the env's reward is nan in env 2 at rollout step 3; "
                                              r"source: the environment \(env\.name=DppoTestNaNReward-v0\)"):
        agent.run()
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoint") is None


# ------------------------------------------------------------------------------------------ normalisation
def test_zero_range_normalisation_warns_naming_the_dimension(tmp_path, caplog):
    path = tmp_path / "normalization.npz"
    Normalization(np.array([0, 0.5, -1], np.float32), np.array([1, 0.5, 1], np.float32),
                  -np.ones(2, np.float32), np.ones(2, np.float32)).save(path)
    with caplog.at_level(logging.WARNING):
        norm = Normalization.load(path)
    assert "obs dimension(s) [1]" in caplog.text and "normalization.npz" in caplog.text
    np.testing.assert_allclose(norm.normalize_obs(np.array([0.5, 0.5, 0.0])), [0, -1, 0], atol=1e-5)  # still usable
    Normalization(np.zeros(2, np.float32), -np.ones(2, np.float32), -np.ones(2, np.float32),
                  np.ones(2, np.float32)).save(path)
    with pytest.raises(DatasetError, match="obs dimension 0 has max -1.0 < min 0.0"):
        Normalization.load(path)
