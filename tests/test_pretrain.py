"""Pre-training: a two-mode toy data set is reproduced; checkpoints round-trip and resume the epoch count."""

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from dppo.runners.pretrain import TrainDiffusionAgent
from dppo.utils import checkpoint as ckpt


def pretrain_cfg(dataset_path, logdir, n_epochs=80, **train):
    return OmegaConf.create({
        "_target_": "dppo.runners.pretrain.TrainDiffusionAgent",
        "logdir": str(logdir), "seed": 0, "obs_dim": 2, "action_dim": 2, "horizon_steps": 1, "cond_steps": 1,
        "denoising_steps": 20, "env": "toy",  # pre-training configs name their env with a string, as shipped
        "train": {"n_epochs": n_epochs, "batch_size": 128, "learning_rate": 3e-3, "weight_decay": 1e-6,
                  "lr_scheduler": {"first_cycle_steps": n_epochs, "warmup_steps": 1, "min_lr": 1e-4},
                  "epoch_start_ema": 5, "update_ema_freq": 1, "save_model_freq": 10, **train},
        "ema": {"decay": 0.9},
        "model": {"_target_": "dppo.policies.diffusion.DiffusionModel", "predict_epsilon": True,
                  "denoised_clip_value": 1.0, "horizon_steps": 1, "obs_dim": 2, "action_dim": 2,
                  "denoising_steps": 20,
                  "network": {"_target_": "dppo.nets.diffusion_mlp.DiffusionMLP", "time_dim": 16,
                              "mlp_dims": [64, 64, 64], "activation_type": "ReLU", "residual_style": True,
                              "cond_dim": 2, "horizon_steps": 1, "action_dim": 2}},
        "train_dataset": {"_target_": "dppo.data.sequence.StitchedSequenceDataset",
                          "dataset_path": dataset_path, "horizon_steps": 1, "cond_steps": 1},
    })


def test_pretraining_reproduces_both_modes(two_mode_dataset, tmp_path):
    agent = TrainDiffusionAgent(pretrain_cfg(two_mode_dataset, tmp_path / "run"))
    result = agent.run()
    assert result["loss"] < 0.5
    a = agent.model.sample({"state": tf.zeros((400, 1, 2))}).numpy()[:, 0]
    near_pos = np.linalg.norm(a - 0.5, axis=1) < 0.2
    near_neg = np.linalg.norm(a + 0.5, axis=1) < 0.2
    assert (near_pos | near_neg).mean() > 0.85  # samples sit on the modes, not between them
    assert 0.25 < near_pos.mean() < 0.75  # and both modes are represented
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoint").name == "state_80.npz"


def test_checkpoint_resume_continues_epoch_count(two_mode_dataset, tmp_path):
    cfg = pretrain_cfg(two_mode_dataset, tmp_path / "run", n_epochs=4, save_model_freq=2)
    first = TrainDiffusionAgent(cfg)
    first.run()
    weights = [w.numpy() for w in first.model.network.weights]
    cfg.train.n_epochs = 6
    cfg.resume = True
    second = TrainDiffusionAgent(cfg)
    assert second.epoch == 4
    for w, v in zip(weights, second.model.network.weights):
        np.testing.assert_array_equal(w, v.numpy())
    second.run()
    assert second.epoch == 6
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_checkpoint_shape_mismatch_names_the_weight(two_mode_dataset, tmp_path):
    agent = TrainDiffusionAgent(pretrain_cfg(two_mode_dataset, tmp_path / "a", n_epochs=1))
    path = agent.save()
    cfg = pretrain_cfg(two_mode_dataset, tmp_path / "b", n_epochs=1)
    cfg.model.network.mlp_dims = [32, 32, 32]
    other = TrainDiffusionAgent(cfg)
    with pytest.raises(ckpt.CheckpointError, match="shape"):
        ckpt.load_policy_weights(other.model, path)


def test_compiled_epoch_accepts_any_number_of_windows(two_mode_dataset, tmp_path):
    agent = TrainDiffusionAgent(pretrain_cfg(two_mode_dataset, tmp_path / "run", n_epochs=1))
    for n in (300, 129):  # a retrace must not reuse tensors made inside the first trace
        assert np.isfinite(float(agent._train_epoch(tf.constant(agent.dataset.permutation(n)[:n]))))
