"""Noise schedule test vectors, DDPM/DDIM reverse steps, clamping, embeddings and MLP topology."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dppo.nets.diffusion_mlp import DiffusionMLP
from dppo.nets.embeddings import sinusoidal_embedding
from dppo.nets.mlp import Linear, ResidualMLP, activation
from dppo.policies.diffusion import DiffusionModel
from dppo.policies.schedule import DiffusionSchedule, ddim_timesteps


def test_cosine_schedule_matches_reference_values_k20():
    s = DiffusionSchedule(20)
    np.testing.assert_allclose(s.betas[:5], [0.007993, 0.020075, 0.032254, 0.044681, 0.05752], atol=2e-6)
    np.testing.assert_allclose(s.betas[-4:], [0.429434, 0.551024, 0.748476, 0.999], atol=2e-6)
    assert s.alphas_cumprod[0] == pytest.approx(0.992007, abs=1e-6)
    assert s.alphas_cumprod[19] == pytest.approx(6.06e-6, rel=1e-3)
    np.testing.assert_allclose(s.posterior_std[1:5], [0.075826, 0.123244, 0.161679, 0.195152], atol=2e-6)
    assert s.posterior_std[0] == pytest.approx(1e-10, rel=1e-3)  # log-variance clipped at 1e-20
    assert s.posterior_std[19] == pytest.approx(0.99647, abs=1e-5)


def test_cosine_schedule_matches_reference_values_k100_and_ddim_grid():
    s = DiffusionSchedule(100, ddim_steps=5)
    assert s.betas[0] == pytest.approx(6.313e-4, rel=1e-3) and s.betas[99] == pytest.approx(0.999)
    np.testing.assert_allclose(s.alphas_cumprod[[0, 20, 40, 60, 80]],
                               [0.999369, 0.889103, 0.632516, 0.326115, 0.085146], atol=2e-6)
    np.testing.assert_array_equal(ddim_timesteps(100, 5), [80, 60, 40, 20, 0])
    np.testing.assert_array_equal(s.ddim_t, [80, 60, 40, 20, 0])
    assert s.ddim_alphas_prev[-1] == 1.0


class OracleEps(keras.layers.Layer):
    """A 'network' that returns a fixed tensor, to drive the reverse step with known inputs."""

    def __init__(self, value):
        super().__init__()
        self.value = tf.constant(value, tf.float32)

    def call(self, x, t, cond, training=False):
        return tf.broadcast_to(self.value, tf.shape(x))


def model_with(eps, k=20, **kw):
    return DiffusionModel(OracleEps(eps), horizon_steps=1, obs_dim=1, action_dim=1, denoising_steps=k, **kw)


def test_ddpm_mean_with_true_noise_is_the_analytic_posterior_mean():
    m = model_with(0.0, denoised_clip_value=None)
    s = m.schedule
    x0, noise, t = 0.3, -0.7, 6
    xt = np.sqrt(s.alphas_cumprod[t]) * x0 + np.sqrt(1 - s.alphas_cumprod[t]) * noise
    m.network.value = tf.constant(noise, tf.float32)
    mean, std = m.p_mean_std(m.network, tf.constant([[[xt]]], tf.float32), tf.constant([t]), m.dummy_cond())
    ac, acp = s.alphas_cumprod[t], s.alphas_cumprod[t - 1]
    want = (np.sqrt(acp) * s.betas[t] / (1 - ac)) * x0 + (np.sqrt(s.alphas[t]) * (1 - acp) / (1 - ac)) * xt
    assert float(mean) == pytest.approx(want, rel=1e-5)
    assert float(std) == pytest.approx(np.sqrt(s.betas[t] * (1 - acp) / (1 - ac)), rel=1e-5)


def test_x0_is_clamped_before_the_mean():
    m = model_with(-50.0)  # absurd noise prediction -> x0 far above 1 -> clamped to 1
    s = m.schedule
    t, xt = 3, 0.2
    mean, _ = m.p_mean_std(m.network, tf.constant([[[xt]]]), tf.constant([t]), m.dummy_cond())
    want = s.posterior_mean_coef1[t] * 1.0 + s.posterior_mean_coef2[t] * xt
    assert float(mean) == pytest.approx(want, rel=1e-5)


def test_ddim_eta0_with_exact_noise_recovers_x0_and_eta1_sigma_is_the_posterior_std():
    m = model_with(0.0, k=100, use_ddim=True, ddim_steps=5, denoised_clip_value=None)
    s = m.schedule
    x0, noise = 0.4, 0.9
    x = np.sqrt(s.ddim_alphas[0]) * x0 + np.sqrt(1 - s.ddim_alphas[0]) * noise  # x at t = 80
    m.network.value = tf.constant(noise, tf.float32)
    for i in range(5):  # the same noise direction all the way down: a deterministic path to x0
        mean, _ = m.p_mean_std(m.network, tf.constant([[[x]]], tf.float32), tf.constant([i]), m.dummy_cond(), 0.0)
        x = float(mean)
        a = s.ddim_alphas_prev[i]
        assert x == pytest.approx(np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, abs=1e-5)
    assert x == pytest.approx(x0, abs=1e-5)
    a, ap = s.ddim_alphas[1], s.ddim_alphas_prev[1]
    _, sigma = m.p_mean_std(m.network, tf.zeros((1, 1, 1)), tf.constant([1]), m.dummy_cond(), 1.0)
    assert float(sigma) == pytest.approx(np.sqrt((1 - ap) / (1 - a) * (1 - a / ap)), rel=1e-5)


def test_base_sampling_is_noise_free_at_the_last_step_and_deterministic_ddim():
    m = model_with(0.0, k=5)
    stds = [float(m.sampling_std(tf.constant(1e-6), step, False)) for step in range(5)]
    assert stds == pytest.approx([1e-3] * 4 + [0.0])
    d = model_with(0.0, k=100, use_ddim=True, ddim_steps=5)
    a = d.sample(d.dummy_cond(3)).numpy()
    b = d.sample(d.dummy_cond(3)).numpy()
    assert not np.allclose(a, b)  # different initial noise
    x0 = d.schedule.ddim_alphas  # with eps = 0 every DDIM path ends at x0 = x_T / sqrt(alpha_T), clamped
    assert np.all(np.abs(a) <= 1.0 + 1e-6) and x0.shape == (5,)


def test_sinusoidal_embedding_order_and_frequencies():
    e = sinusoidal_embedding(tf.constant([3.0]), 8).numpy()[0]
    w = np.exp(-np.log(10000) * np.arange(4) / 3)
    np.testing.assert_allclose(e, np.concatenate([np.sin(3 * w), np.cos(3 * w)]), rtol=1e-5)


def test_residual_mlp_topology_and_torch_init():
    net = ResidualMLP([10, 64, 64, 64, 64, 64, 3], activation_type="ReLU")
    net(tf.zeros((2, 10)))
    assert len(net.blocks) == 2  # (len(dims) - 3) / 2
    with pytest.raises(ValueError):
        ResidualMLP([10, 64, 64, 3])
    lin = Linear(7)
    lin(tf.zeros((1, 400)))
    assert np.abs(lin.kernel.numpy()).max() <= 1 / np.sqrt(400) + 1e-7
    assert np.abs(lin.bias.numpy()).max() <= 1 / np.sqrt(400) + 1e-7
    with pytest.raises(ValueError, match="activation_type"):
        activation("Swishy")


def test_diffusion_mlp_input_order_and_shapes():
    net = DiffusionMLP(action_dim=3, horizon_steps=4, cond_dim=11, time_dim=16, mlp_dims=[32, 32, 32],
                       cond_mlp_dims=[8, 5], residual_style=True)
    out = net(tf.zeros((2, 4, 3)), tf.constant([0, 5]), {"state": tf.zeros((2, 1, 11))})
    assert out.shape == (2, 4, 3)
    assert net.mlp.first.kernel.shape[0] == 4 * 3 + 16 + 5  # x_flat, time embedding, cond MLP output
