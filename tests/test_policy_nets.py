"""Policy networks: Gaussian/GMM heads, transformers and the 1-D U-Net (shapes, std parameterisations,
PyTorch conv semantics, FiLM), and that each family pre-trains to a lower loss with the generic runner."""

import csv

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from dppo.nets.gaussian_mlp import Gaussian_MLP
from dppo.nets.gmm_mlp import GMM_MLP
from dppo.nets.transformer import Gaussian_Transformer, GMM_Transformer
from dppo.nets.unet1d import Conv1d, ConvTranspose1d, Unet1D
from dppo.runners.pretrain import TrainGaussianAgent


def cond_of(b, dim=5, seed=0):
    return {"state": tf.random.stateless_normal((b, 1, dim), (seed, 2)) * 3.0}


def test_gaussian_mlp_std_parameterisations():
    cond = cond_of(4)
    fixed = Gaussian_MLP(2, 3, 5, mlp_dims=[8, 8, 8], residual_style=True, fixed_std=0.2)
    mean, std = fixed(cond)
    assert mean.shape == std.shape == (4, 6) and np.all(np.abs(mean) <= 1) and np.allclose(std, 0.2)

    learned_fixed = Gaussian_MLP(2, 3, 5, mlp_dims=[8, 8, 8], fixed_std=0.1, learn_fixed_std=True, std_max=1.0)
    assert np.allclose(learned_fixed(cond)[1], 0.1)
    learned_fixed.logvar.assign(np.log([0.05**2, 5.0**2]))  # second dim above std_max -> clamped to 1
    np.testing.assert_allclose(learned_fixed(cond)[1], np.tile([0.05, 1.0], (4, 3)), rtol=1e-5)  # tiled (T_p, D_a)

    learned = Gaussian_MLP(2, 3, 5, mlp_dims=[8, 8], fixed_std=None, std_min=0.01, std_max=0.5,
                           use_layernorm=True, dropout=0.1)
    _, std = learned(cond, training=True)
    assert np.all(std.numpy() >= 0.01 - 1e-7) and np.all(std.numpy() <= 0.5 + 1e-6)


def test_gmm_mlp_shapes_and_learned_fixed_std_layout():
    net = GMM_MLP(2, 3, 5, mlp_dims=[8, 8], num_modes=4, fixed_std=0.1, learn_fixed_std=True)
    means, stds, logits = net(cond_of(2))
    assert means.shape == stds.shape == (2, 4, 6) and logits.shape == (2, 4)
    lv = np.log(np.linspace(0.02, 0.2, 8) ** 2)  # (M * D_a,)
    net.logvar.assign(lv)
    expected = np.tile(np.exp(0.5 * lv).reshape(1, 4, 2), (2, 1, 3))  # per mode, tiled over the horizon
    np.testing.assert_allclose(net(cond_of(2))[1], expected, rtol=1e-5)


def test_transformer_heads_shapes_and_mode_layout():
    cond = cond_of(3)
    g = Gaussian_Transformer(transition_dim=2, horizon_steps=4, cond_dim=5, n_layer=2, n_head=2, n_emb=16,
                             fixed_std=None, attn_pdrop=0.0)
    mean, std = g(cond)
    assert mean.shape == std.shape == (3, 8)
    out, _ = g.transformer(tf.reshape(cond["state"], (3, 5)))
    assert out.shape == (3, 4, 4)  # mean and logvar per step
    np.testing.assert_allclose(mean, np.tanh(out[..., :2].numpy()).reshape(3, 8), rtol=1e-5, atol=1e-6)

    m = GMM_Transformer(transition_dim=2, horizon_steps=4, cond_dim=5, num_modes=3, n_layer=1, n_head=4,
                        n_emb=16, fixed_std=0.1)
    means, stds, logits = m(cond)
    assert means.shape == stds.shape == (3, 3, 8) and logits.shape == (3, 3) and np.allclose(stds, 0.1)
    out, pre = m.transformer(tf.reshape(cond["state"], (3, 5)))
    expected = np.tanh(out.numpy()).reshape(3, 4, 3, 2).transpose(0, 2, 1, 3).reshape(3, 3, 8)
    np.testing.assert_allclose(means, expected, rtol=1e-5, atol=1e-6)  # mode m, step h -> out[h, m*D:(m+1)*D]
    np.testing.assert_allclose(logits, m.modes_head(tf.reshape(pre, (3, 64))), rtol=1e-5, atol=1e-6)


def torch_conv1d(x, w, b, stride, pad):
    """PyTorch Conv1d on channels-last numpy: x (B, L, C), w (k, C, O)."""
    x = np.pad(x, ((0, 0), (pad, pad), (0, 0)))
    k = w.shape[0]
    n_out = (x.shape[1] - k) // stride + 1
    return np.stack([np.einsum("bkc,kco->bo", x[:, i * stride:i * stride + k], w) for i in range(n_out)], 1) + b


def torch_conv_transpose1d(x, w, b, stride, pad):
    """PyTorch ConvTranspose1d: y[i*stride + k - pad] += x[i] W[k]; w (k, O, C) as Keras stores it."""
    bsz, length, _ = x.shape
    k = w.shape[0]
    full = np.zeros((bsz, (length - 1) * stride + k, w.shape[1]))
    for i in range(length):
        full[:, i * stride:i * stride + k] += np.einsum("bc,koc->bko", x[:, i], w)
    return full[:, pad:full.shape[1] - pad] + b


def test_unet_convolutions_follow_pytorch_padding():
    x = np.random.default_rng(0).normal(size=(2, 8, 3)).astype(np.float32)
    down = Conv1d(5, 3, stride=2, padding=1)
    y = down(x).numpy()
    assert y.shape == (2, 4, 5)
    np.testing.assert_allclose(y, torch_conv1d(x, *(v.numpy() for v in down.weights), 2, 1), rtol=1e-4, atol=1e-5)
    up = ConvTranspose1d(5, 4, 2, 1)
    y = up(x).numpy()
    assert y.shape == (2, 16, 5)  # lengths double
    w, b = (v.numpy() for v in up.weights)
    np.testing.assert_allclose(y, torch_conv_transpose1d(x, w, b, 2, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("horizon,dim_mults", [(4, [1, 2]), (16, [1, 2]), (16, [1, 2, 4])])
def test_unet_shapes_and_film_conditioning(horizon, dim_mults):
    net = Unet1D(action_dim=3, cond_dim=5, diffusion_step_embed_dim=8, dim=8, dim_mults=dim_mults, kernel_size=5,
                 n_groups=4, cond_predict_scale=True)
    x = tf.tile(tf.random.stateless_normal((1, horizon, 3), (1, 1)), (3, 1, 1))
    state = cond_of(2)["state"]
    cond = {"state": tf.concat([state[:1], state[1:], state[:1]], 0)}  # rows 0, 2: same state; 1: another
    y = net(x, tf.constant([3, 3, 9]), cond).numpy()  # rows 0, 1: same t; 2: another
    assert y.shape == (3, horizon, 3)
    assert np.abs(y[0] - y[1]).max() > 1e-4  # the state reaches the output (FiLM)
    assert np.abs(y[0] - y[2]).max() > 1e-5  # and so does t
    with pytest.raises(ValueError, match="divisible"):
        net(tf.zeros((1, 2 ** (len(dim_mults) - 1) + 1, 3)), tf.constant([0]), cond_of(1))


# pre-training with the generic runner -------------------------------------------------------------------
def family_cfg(dataset_path, logdir, model, n_epochs, horizon=4, lr=1e-2, batch_size=32, target="TrainGaussianAgent"):
    return OmegaConf.create({
        "_target_": f"dppo.runners.pretrain.{target}", "logdir": str(logdir), "seed": 0,
        "train": {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate": lr, "weight_decay": 1e-6,
                  "lr_scheduler": {"first_cycle_steps": 100, "warmup_steps": 1, "min_lr": lr},
                  "epoch_start_ema": 1, "update_ema_freq": 1, "save_model_freq": n_epochs},
        "ema": {"decay": 0.9},
        "model": model,
        "train_dataset": {"_target_": "dppo.data.sequence.StitchedSequenceDataset", "dataset_path": dataset_path,
                          "horizon_steps": horizon, "cond_steps": 1},
    })


def write_smooth_dataset(path, n_traj=30, length=20, seed=0):
    """States in [-1, 1]^2, actions 0.8 tanh(W s) + small noise: learnable by every family."""
    rng = np.random.default_rng(seed)
    states = rng.uniform(-1, 1, size=(n_traj * length, 2))
    actions = 0.8 * np.tanh(states @ np.array([[1.5, -1.0], [0.5, 2.0]])) + 0.02 * rng.normal(size=states.shape)
    np.savez(path, states=states.astype(np.float32), actions=actions.astype(np.float32),
             traj_lengths=np.full(n_traj, length, dtype=np.int64))
    return str(path)


def epoch_losses(logdir):
    with open(logdir / "metrics.csv", newline="") as f:
        return [float(r["loss/loss"]) for r in csv.DictReader(f)]


NET = {"horizon_steps": 4, "action_dim": 2, "cond_dim": 2}
# tiny nets; the U-Net runs one level without GroupNorm here (the runner re-instantiates its epoch graph every
# epoch, which costs seconds for a deeper U-Net on a loaded CPU); those paths are covered by the shape tests above
FAMILIES = {
    "gaussian_mlp": {"_target_": "dppo.policies.gaussian.GaussianModel", "horizon_steps": 4,
                     "network": {"_target_": "dppo.nets.gaussian_mlp.Gaussian_MLP", "mlp_dims": [32, 32, 32],
                                 "residual_style": True, "fixed_std": 0.1, **NET}},
    "gmm_mlp": {"_target_": "dppo.policies.gmm.GMMModel", "horizon_steps": 4,
                "network": {"_target_": "dppo.nets.gmm_mlp.GMM_MLP", "mlp_dims": [32, 32], "num_modes": 3,
                            "fixed_std": 0.1, **NET}},
    "gaussian_transformer": {
        "_target_": "dppo.policies.gaussian.GaussianModel", "horizon_steps": 4, "obs_dim": 2, "action_dim": 2,
        "network": {"_target_": "dppo.nets.transformer.Gaussian_Transformer", "n_layer": 1, "n_head": 2,
                    "n_emb": 16, "embd_pdrop": 0, "attn_pdrop": 0, "fixed_std": 0.1, "learn_fixed_std": True,
                    "transition_dim": 2, "horizon_steps": 4, "cond_dim": 2}},
    "diffusion_unet": {
        "_target_": "dppo.policies.diffusion.DiffusionModel", "horizon_steps": 4, "obs_dim": 2, "action_dim": 2,
        "denoising_steps": 5,
        "network": {"_target_": "dppo.nets.unet1d.Unet1D", "diffusion_step_embed_dim": 8, "dim": 8,
                    "dim_mults": [1], "kernel_size": 3, "n_groups": None, "cond_predict_scale": True,
                    "action_dim": 2, "cond_dim": 2}},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_pretrains_to_lower_loss(family, tmp_path):
    diffusion = family.startswith("diffusion")
    data = write_smooth_dataset(tmp_path / "train.npz")
    n_epochs = 2
    target = "TrainDiffusionAgent" if diffusion else "TrainGaussianAgent"
    agent = TrainGaussianAgent(family_cfg(data, tmp_path / "run", FAMILIES[family], n_epochs, target=target))
    agent.run()
    losses = epoch_losses(tmp_path / "run")
    assert len(losses) == n_epochs and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.1 * abs(losses[0]), losses
    if not diffusion:  # (the diffusion sampler is tested with the diffusion model)
        a = agent.model.sample({"state": tf.zeros((8, 1, 2))}).numpy()
        assert a.shape == (8, 4, 2) and np.all(np.isfinite(a))
