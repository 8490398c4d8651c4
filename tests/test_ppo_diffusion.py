"""DPPO's chain log-probabilities, clip schedule and PPO loss against numbers computed independently."""

import numpy as np
import pytest
import tensorflow as tf

from dppo.algos.ppo import PPOBatch, PPOLearner
from dppo.algos.ppo_diffusion import PPODiffusion, clip_coefficients
from dppo.nets.critics import CriticObs
from dppo.nets.diffusion_mlp import DiffusionMLP
from dppo.utils.optim import AdamW


def make_model(k=5, kp=3, **kw):
    net = lambda: DiffusionMLP(2, 2, 3, time_dim=8, mlp_dims=[16, 16, 16], residual_style=True)  # noqa: E731
    return PPODiffusion(actor=net(), actor_ft=net(), critic=CriticObs(3, [16, 16]), ft_denoising_steps=kp,
                        horizon_steps=2, obs_dim=3, action_dim=2, denoising_steps=k, seed=1, **kw)


def test_clip_coefficients_match_the_reference_values():
    got = clip_coefficients(tf.range(10), 10, 0.01, 0.001, 3.0).numpy()
    want = [0.001, 0.001187, 0.001447, 0.00181, 0.002317, 0.003025, 0.004013, 0.005391, 0.007315, 0.01]
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert clip_coefficients(tf.constant([0]), 1, 0.1, 0.01, 3.0).numpy()[0] == pytest.approx(0.1)


def test_chain_layout_and_frozen_vs_finetuned_steps():
    m = make_model(k=5, kp=3)
    cond = {"state": tf.random.normal((4, 1, 3))}
    action, chain = m.sample(cond, deterministic=False, return_chain=True)
    assert chain.shape == (4, 4, 2, 2)
    np.testing.assert_array_equal(chain[:, -1], action)
    assert [m.net_for_step(s) is m.actor_ft for s in range(5)] == [False, False, True, True, True]
    full = make_model(k=4, kp=4)
    _, chain = full.sample(cond, return_chain=True)
    assert chain.shape == (4, 5, 2, 2)  # K' = K: the initial noise is the chain's first entry


def test_chain_log_probs_match_closed_form_gaussian():
    m = make_model(k=5, kp=3, min_logprob_denoising_std=0.1)
    s = m.schedule
    cond = {"state": tf.random.normal((2, 1, 3))}
    _, chain = m.sample(cond, return_chain=True)
    got = m.chain_log_probs(cond, chain).numpy()  # (2, 3, 2, 2)
    x = chain.numpy()
    for b in range(2):
        for k in range(3):
            t = 2 - k  # fine-tuned steps run t = K'-1 ... 0
            eps = m.actor_ft(x[b:b + 1, k], tf.constant([t]), {"state": cond["state"][b:b + 1]}).numpy()[0]
            x0 = np.clip(np.sqrt(1 / s.alphas_cumprod[t]) * x[b, k] - np.sqrt(1 / s.alphas_cumprod[t] - 1) * eps, -1, 1)
            ac_prev = s.alphas_cumprod[t - 1] if t > 0 else 1.0
            mean = (s.betas[t] * np.sqrt(ac_prev) / (1 - s.alphas_cumprod[t]) * x0
                    + (1 - ac_prev) * np.sqrt(s.alphas[t]) / (1 - s.alphas_cumprod[t]) * x[b, k])
            var = s.betas[t] * (1 - ac_prev) / (1 - s.alphas_cumprod[t])
            std = max(np.sqrt(max(var, 1e-20)), 0.1)
            want = -0.5 * ((x[b, k + 1] - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
            np.testing.assert_allclose(got[b, k], want, rtol=1e-4, atol=1e-4)


def test_stochastic_sampling_std_floor_applies_to_every_step():
    m = make_model(k=5, kp=2, min_sampling_denoising_std=0.3)
    std = tf.constant(0.01)
    assert [float(m.sampling_std(std, s, False)) for s in range(5)] == pytest.approx([0.3] * 5)
    assert [float(m.sampling_std(std, s, True)) for s in range(5)] == pytest.approx([0.01] * 4 + [0.0])


def learner_of(m, lr=1e-2, grad_accumulate=1):
    return PPOLearner(m, AdamW(m.trainable_actor_variables(), lr), AdamW(m.critic.trainable_variables, lr), seed=0,
                      grad_accumulate=grad_accumulate)


def test_ppo_loss_on_a_tiny_batch():
    """B = 3 env steps x K' = 3 denoising transitions; advantages normalised over the env steps."""
    m = make_model(k=5, kp=3, gamma_denoising=0.5, clip_ploss_coef=0.2, clip_ploss_coef_base=0.1,
                   clip_ploss_coef_rate=1.0)
    new = np.array([[0.3, -0.2, 0.05], [0.0, 0.1, -0.3], [0.2, 0.0, 0.15]], np.float32)  # (B, K') mean log-probs
    old = np.zeros((3, 3), np.float32)
    learner = learner_of(m)
    m.chain_log_probs = lambda c, ch: tf.constant(new)[:, :, None, None] * tf.ones((3, 3, 2, 2))
    m.critic = lambda c, training=False: tf.constant([1.0, 2.0, 3.0])
    adv = np.array([1.0, -1.0, 2.0], np.float32)
    ret = np.array([1.5, 2.0, 2.0], np.float32)
    out = learner.loss({"state": tf.zeros((3, 1, 3))}, tf.zeros((3, 4, 2, 2)), tf.constant(ret),
                             tf.constant(ret), tf.constant(adv), tf.constant(old))
    a = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)  # over the 3 env steps, not over the 9 transitions
    k = np.arange(3)
    a = a[:, None] * 0.5 ** (2 - k)[None, :]  # gamma_denoising^(K'-1-k)
    ratio = np.exp(new - old)
    clip = (0.1 + 0.1 * (np.exp(k / 2) - 1) / (np.e - 1))[None, :]
    pg = np.mean(np.maximum(-a * ratio, -a * np.clip(ratio, 1 - clip, 1 + clip)))
    assert float(out["pg_loss"]) == pytest.approx(pg, rel=1e-5)
    assert float(out["v_loss"]) == pytest.approx(0.5 * np.mean((np.array([1, 2, 3]) - ret) ** 2))
    assert float(out["clipfrac"]) == pytest.approx(np.mean(np.abs(ratio - 1) > clip))
    assert float(out["approx_kl"]) == pytest.approx(np.mean(ratio - 1 - np.log(ratio)), rel=1e-5)
    assert float(out["entropy_loss"]) == -1.0  # DDPM: the reference's constant entropy term


def test_log_probs_are_clamped_before_averaging():
    m = make_model(k=5, kp=3, reward_horizon=1)
    lp = np.full((1, 3, 2, 2), -9.0, np.float32)
    lp[0, :, 0, 0] = 1.0
    m.chain_log_probs = lambda c, ch: tf.constant(lp)
    got, _ = m.transition_log_probs({"state": tf.zeros((1, 1, 3))}, tf.zeros((1, 4, 2, 2)))
    # horizon 1 keeps [1, -9]; clamped to [1, -5] and averaged: -2 on every transition
    np.testing.assert_allclose(got, [[-2.0, -2.0, -2.0]])


def test_minibatches_are_env_steps_with_all_their_denoising_transitions():
    """The reference v0.5 unit: epochs x (N // batch_size) optimizer steps of batch_size x K' transitions."""
    m = make_model(k=5, kp=3)
    learner = learner_of(m)
    rows = []
    score = m.chain_log_probs
    m.chain_log_probs = lambda c, ch: rows.append(ch.shape) or score(c, ch)  # traced once: records the shape
    cond = {"state": tf.random.normal((8, 1, 3))}
    _, chains = m.sample(cond, return_chain=True)
    v, lp = learner.score(cond, chains)
    assert lp.shape == (8, 3)
    base = [w.numpy() for w in m.network.weights]
    ft = [w.numpy() for w in m.actor_ft.weights]
    batch = PPOBatch(cond, chains, tf.ones(8), v, tf.random.normal((8,)), lp)
    out = learner.update(batch, True, batch_size=3, update_epochs=2, vf_coef=0.5, ent_coef=0.0, target_kl=None)
    assert out["n_minibatches"] == 4  # 8 env steps // 3 per minibatch = 2 per epoch, x 2 epochs
    assert int(learner.actor_optimizer.iterations.numpy()) == 4
    assert out["minibatch_transitions"] == 9  # 3 env steps x K' = 3
    assert rows[-1][1:] == (4, 2, 2)  # the loss scores whole chains (K' + 1 entries) of each env step
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(base, m.network.weights))
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(ft, m.actor_ft.weights))
    out = learner.update(batch, True, batch_size=3, update_epochs=2, vf_coef=0.5, ent_coef=0.0, target_kl=-1.0)
    assert out["n_minibatches"] == 1  # target_kl stops after the first minibatch


def test_gradient_accumulation_sums_minibatches_into_one_step():
    """k minibatches per optimizer step; with plain SGD-like scale invariance checked through Adam's first step:
    Adam's first update is lr * sign-like g / (|g| + eps), identical for the sum or the mean of the gradients."""
    m = make_model(k=5, kp=2)
    learner = learner_of(m, grad_accumulate=2)
    cond = {"state": tf.random.normal((8, 1, 3))}
    _, chains = m.sample(cond, return_chain=True)
    v, lp = learner.score(cond, chains)
    batch = PPOBatch(cond, chains, tf.ones(8), v, tf.random.normal((8,)), lp)
    out = learner.update(batch, True, batch_size=2, update_epochs=1, vf_coef=0.5, ent_coef=0.0, target_kl=None)
    assert out["n_minibatches"] == 4 and int(learner.actor_optimizer.iterations.numpy()) == 2


def test_final_action_clip_is_recorded_in_the_chain():
    m = make_model(k=5, kp=3, final_action_clip_value=0.05)
    action, chain = m.sample({"state": tf.random.normal((16, 1, 3))}, return_chain=True)
    assert np.abs(action.numpy()).max() <= 0.05 + 1e-7
    np.testing.assert_array_equal(chain[:, -1], action)  # PPO scores the action the env receives


def test_constructors_do_no_file_io():
    """network_path is only recorded; the runner loads it after building (runners/ppo.py with_initial_weights)."""
    from dppo.utils.checkpoint import CheckpointError
    m = make_model(k=5, kp=3, network_path="does/not/exist.npz")
    with pytest.raises(CheckpointError, match="does not exist"):
        m.load_initial_weights(m.network_path)
