"""Distributions and the Gaussian / GMM policy models against closed forms computed in NumPy/SciPy."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from scipy.special import logsumexp, softmax

from dppo.nets.gaussian_mlp import Gaussian_MLP
from dppo.nets.gmm_mlp import GMM_MLP
from dppo.policies import distributions as dist
from dppo.policies.gaussian import GaussianModel
from dppo.policies.gmm import GMMModel

RNG = np.random.default_rng(0)


def test_normal_log_prob_and_entropy_match_scipy():
    x, mean = RNG.normal(size=(4, 6)), RNG.normal(size=(4, 6))
    std = RNG.uniform(0.05, 2.0, size=(4, 6))
    np.testing.assert_allclose(dist.normal_log_prob(x, mean, std), stats.norm.logpdf(x, mean, std), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(dist.normal_entropy(std), stats.norm.entropy(0, std), rtol=1e-5, atol=1e-5)


def gmm_case(b=5, m=3, d=4):
    return (RNG.normal(size=(b, d)), RNG.normal(size=(b, m, d)), RNG.uniform(0.2, 1.5, size=(b, m, d)),
            RNG.normal(size=(b, m)))


def test_gmm_log_prob_is_the_joint_mixture_density():
    x, means, stds, logits = gmm_case()
    comp = stats.norm.logpdf(x[:, None, :], means, stds).sum(-1)  # (B, M)
    expected = logsumexp(np.log(softmax(logits, axis=-1)) + comp, axis=-1)
    got = dist.gmm_log_prob(*(tf.constant(a, tf.float32) for a in (x, means, stds, logits)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_gmm_entropy_is_weight_averaged_component_entropy():
    _, _, stds, logits = gmm_case()
    comp_entropy = stats.norm.entropy(0, stds).sum(-1)  # entropy of each Independent Normal (B, M)
    expected = (softmax(logits, axis=-1) * comp_entropy).sum(-1)
    np.testing.assert_allclose(dist.gmm_entropy(tf.constant(stds, tf.float32), tf.constant(logits, tf.float32)),
                               expected, rtol=1e-5)


def test_gmm_sample_picks_modes_by_weight():
    rng = tf.random.Generator.from_seed(1)
    n = 20000
    means = tf.constant([[[-5.0], [0.0], [5.0]]]) * tf.ones((n, 1, 1))
    stds = tf.fill((n, 3, 1), 0.1)
    logits = tf.math.log(tf.constant([[0.2, 0.5, 0.3]])) * tf.ones((n, 1))
    x = tf.function(lambda: dist.gmm_sample(rng, means, stds, logits, randn_clip_value=3.0))().numpy()[:, 0]
    freq = [np.mean(np.abs(x - c) < 1.0) for c in (-5, 0, 5)]
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.015)
    assert np.all(np.abs(x - np.round(x / 5) * 5) <= 0.3 + 1e-6)  # clamped at 3 std of 0.1


def test_tanh_normal_log_prob_matches_change_of_variables():
    u, mean = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 3))
    std = RNG.uniform(0.3, 1.2, size=(6, 3))
    a = np.tanh(u)
    reference = (stats.norm.logpdf(u, mean, std) - np.log(1 - a**2 + 1e-6)).sum(-1)  # the reference's, with its eps
    exact = (stats.norm.logpdf(u, mean, std) - np.log(1 - a**2)).sum(-1)  # density of tanh(u), no eps
    got = dist.tanh_normal_log_prob(*(tf.constant(v, tf.float32) for v in (u, mean, std)))
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got, exact, atol=1e-3)
    rng = tf.random.Generator.from_seed(0)
    sample, logp = dist.tanh_normal_sample(rng, tf.constant(mean, tf.float32), tf.constant(std, tf.float32))
    assert np.all(np.abs(sample) < 1) and logp.shape == (6,)


def state_cond(b, obs_dim=3, seed=0):
    return {"state": tf.random.stateless_normal((b, 1, obs_dim), (seed, 1))}


def test_gaussian_model_log_prob_loss_and_clamped_sampling():
    net = Gaussian_MLP(action_dim=2, horizon_steps=3, cond_dim=3, mlp_dims=[16, 16], fixed_std=None)
    model = GaussianModel(net, horizon_steps=3, randn_clip_value=0.5, ent_coef=0.1, seed=3)
    assert (model.obs_dim, model.action_dim) == (3, 2)  # inferred from the network
    cond = state_cond(64)
    mean, std = (t.numpy() for t in net(cond))
    actions = RNG.uniform(-1, 1, size=(64, 3, 2)).astype(np.float32)
    per_dim = stats.norm.logpdf(actions.reshape(64, 6), mean, std)
    np.testing.assert_allclose(model.log_prob(cond, actions), per_dim.mean(-1), rtol=1e-4, atol=1e-4)  # MEAN
    entropy = stats.norm.entropy(0, std)
    np.testing.assert_allclose(model.entropy(cond), entropy.mean(-1), rtol=1e-5, atol=1e-5)
    expected_loss = -per_dim.mean() - 0.1 * entropy.mean()
    np.testing.assert_allclose(model.loss(actions, cond, training=False), expected_loss, rtol=1e-4)
    a = model.sample(cond).numpy().reshape(64, 6)
    assert np.all(np.abs(a - mean) <= 0.5 * std + 1e-5)  # draws stay in mean +- randn_clip * std
    assert np.abs(a - mean).max() > 0.2 * std.min()  # but are random
    a_det = model.sample(cond, deterministic=True).numpy().reshape(64, 6)
    assert np.abs(a_det - mean).max() <= 0.5e-4 + 1e-6  # deterministic: std 1e-4


def test_gmm_model_log_prob_is_joint_and_loss_is_its_negative_mean():
    net = GMM_MLP(action_dim=2, horizon_steps=2, cond_dim=3, mlp_dims=[16, 16], num_modes=4, fixed_std=None)
    model = GMMModel(net, horizon_steps=2)
    cond = state_cond(32)
    means, stds, logits = (t.numpy() for t in net(cond))
    actions = RNG.uniform(-1, 1, size=(32, 2, 2)).astype(np.float32)
    comp = stats.norm.logpdf(actions.reshape(32, 1, 4), means, stds).sum(-1)
    expected = logsumexp(np.log(softmax(logits, -1)) + comp, axis=-1)
    np.testing.assert_allclose(model.log_prob(cond, actions), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.loss(actions, cond, training=False), -expected.mean(), rtol=1e-4)
    ent = (softmax(logits, -1) * stats.norm.entropy(0, stds).sum(-1)).sum(-1)
    np.testing.assert_allclose(model.entropy(cond), ent, rtol=1e-4)
    a = model.sample(cond, deterministic=True).numpy().reshape(32, 1, 4)
    assert np.min(np.abs(a - means).max(-1), axis=1).max() < 1e-3  # each draw sits on one of the modes


@pytest.mark.parametrize("learn", [False, True])
def test_checkpoint_without_learned_std_loads_into_learn_fixed_std_network(tmp_path, learn):
    from dppo.utils import checkpoint as ckpt

    pre = GaussianModel(Gaussian_MLP(2, 2, 3, mlp_dims=[8, 8, 8], residual_style=True, fixed_std=0.1), 2)
    path = ckpt.save_checkpoint(tmp_path / "state_1.npz", {"model": pre.network.weights})
    ft = GaussianModel(Gaussian_MLP(2, 2, 3, mlp_dims=[8, 8, 8], residual_style=True, fixed_std=0.1,
                                    learn_fixed_std=learn), 2, network_path=str(path))
    ft.load_initial_weights(ft.network_path)  # constructors do no file I/O
    cond = state_cond(4)
    np.testing.assert_allclose(ft.network(cond)[0], pre.network(cond)[0], rtol=1e-6)
    np.testing.assert_allclose(ft.network(cond)[1], 0.1, rtol=1e-5)
