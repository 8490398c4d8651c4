"""DPOER (dppo/algos/dpoer.py): the entropy estimator, the analytic chain entropy, the temperature, the ratio with
a learned std, the faithful loss, the learner hooks and the random-stream discipline, against numbers worked out
independently."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dppo.algos.dpoer import DPOERDiffusion, PPOEntDiffusion, Temperature
from dppo.algos.ppo import PPOBatch, PPOLearner
from dppo.algos.ppo_diffusion import PPODiffusion
from dppo.nets.critics import CriticObs
from dppo.nets.diffusion_mlp import DiffusionMLP
from dppo.policies.entropy import gaussian_entropy, knn_entropy
from dppo.utils.optim import AdamW


def make(cls, k=5, kp=3, horizon=2, action_dim=2, seed=1, **kw):
    net = lambda: DiffusionMLP(action_dim, horizon, 3, time_dim=8, mlp_dims=[16, 16, 16], residual_style=True)  # noqa: E731
    return cls(actor=net(), actor_ft=net(), critic=CriticObs(3, [16, 16]), ft_denoising_steps=kp,
               horizon_steps=horizon, obs_dim=3, action_dim=action_dim, denoising_steps=k, seed=seed, **kw)


def learner_of(m, lr=1e-2):
    return PPOLearner(m, AdamW(m.trainable_actor_variables(), lr), AdamW(m.critic.trainable_variables, lr), seed=0)


# the estimator ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 4])
def test_knn_entropy_of_gaussians(dim):
    """256 states x 32 samples: the mean estimate is within 0.1 nats of the closed form in 2 and 4 dims (its
    bias at N = 32 grows with the dimension; docs/dpoer.md lists it)."""
    rng = np.random.default_rng(0)
    std = np.array([0.3, 0.1, 0.5, 0.2][:dim])
    x = (rng.normal(size=(256, 32, dim)) * std).astype(np.float32)
    got = float(tf.reduce_mean(knn_entropy(x, k=1)))
    assert got == pytest.approx(gaussian_entropy(2 * np.log(std).sum(), dim), abs=0.1)


def test_knn_entropy_of_a_two_component_mixture():
    """Two far-apart equal-weight components: H = H(component) + log 2 (the overlap is ~e^-139)."""
    rng = np.random.default_rng(1)
    side = rng.integers(0, 2, size=(256, 32, 1)) * 2.0 - 1.0
    x = (rng.normal(size=(256, 32, 2)) * 0.3 + side * np.array([5.0, 0.0])).astype(np.float32)
    want = gaussian_entropy(2 * 2 * np.log(0.3), 2) + np.log(2.0)
    assert float(tf.reduce_mean(knn_entropy(x, k=1))) == pytest.approx(want, abs=0.1)


@pytest.mark.parametrize("dim", [2, 12])
def test_knn_entropy_moves_by_d_log_2_when_the_spread_doubles(dim):
    x = np.random.default_rng(2).normal(size=(8, 32, dim)).astype(np.float32)
    h1, h2 = knn_entropy(x, k=1).numpy(), knn_entropy(2 * x, k=1).numpy()
    np.testing.assert_allclose(h2 - h1, dim * np.log(2.0), atol=1e-3)


# the temperature ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entropy, grows", [(-15.0, True), (-9.0, False)])
def test_temperature_moves_toward_the_target(entropy, grows):
    """Target -12: an entropy below it raises alpha, above it lowers alpha; alpha stays positive."""
    temp = Temperature(0.272, lr=0.5)
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = temp.loss(tf.constant(entropy), -12.0)
        temp.optimizer.apply(tape.gradient(loss, [temp.log_alpha]))
    alpha = float(temp.alpha)
    assert (alpha > 0.272) == grows and alpha > 0
    g = -(-12.0 - entropy)  # d loss / d log_alpha = -(H_target - H)
    with tf.GradientTape() as tape:
        loss = temp.loss(tf.constant(entropy), -12.0)
    assert float(tape.gradient(loss, temp.log_alpha)) == pytest.approx(g)


# the sound mode ------------------------------------------------------------------------------------------------
def test_analytic_chain_entropy_matches_monte_carlo():
    """-E log pi(x_next | x_prev) of sampled chains, per fine-tuned step and action dim, summed over steps and
    averaged over dims, equals the analytic entropy (3000 chains x 2 chunk steps; standard error ~0.01 per step)."""
    m = make(PPOEntDiffusion, k=5, kp=3, horizon=2, action_dim=2)
    m.log_std_param.assign(tf.constant([[-2.0, -1.0], [-1.5, -3.0], [-0.5, -2.5]]))
    cond = {"state": tf.random.normal((3000, 1, 3), seed=3)}
    _, chain = m.sample(cond, return_chain=True)
    lp = m.chain_log_probs(cond, chain).numpy()  # (B, K', T_p, D_a), unclamped
    mc = -lp.mean(axis=(0, 2))  # (K', D_a)
    std = np.sqrt(0.1 ** 2 + np.exp(2 * m.log_std_param.numpy()))
    np.testing.assert_allclose(mc, 0.5 * np.log(2 * np.pi * np.e) + np.log(std), atol=0.05)
    assert float(m.chain_entropy()) == pytest.approx(mc.mean(axis=1).sum(), abs=0.05)


def test_ppo_ratio_includes_the_std_change():
    """K' = 1, one chunk step, one action dim: after changing rho, the ratio is N(x; mu, s1) / N(x; mu, s0)."""
    m = make(PPOEntDiffusion, k=3, kp=1, horizon=1, action_dim=1)
    learner = learner_of(m)
    cond = {"state": tf.constant([[[0.2, -0.1, 0.4]]])}
    _, chain = m.sample(cond, return_chain=True)  # (1, 2, 1, 1)
    _, old = learner.score(cond, chain)
    s0 = math.sqrt(0.01 + math.exp(2 * float(m.log_std_param[0, 0])))
    m.log_std_param.assign([[math.log(0.3)]])
    s1 = math.sqrt(0.01 + 0.09)
    mean, _ = m.p_mean_std(m.actor_ft, chain[:, 0], m.ft_grid_index(tf.constant([0])), cond)
    d = float(chain[0, 1, 0, 0] - mean[0, 0, 0])
    want = s0 / s1 * math.exp(-d * d / (2 * s1 * s1) + d * d / (2 * s0 * s0))
    out = learner.loss(cond, chain, tf.constant([0.0]), tf.constant([0.0]), tf.constant([1.0]), old)
    assert float(out["ratio"]) == pytest.approx(want, rel=1e-4)
    assert float(out["entropy"]) == pytest.approx(0.5 * math.log(2 * math.pi * math.e) + math.log(s1), rel=1e-5)


def test_sound_mode_samples_with_its_learned_std_and_trains_it():
    m = make(PPOEntDiffusion, k=5, kp=2, init_alpha=0.5, alpha_lr=0.1)
    # the fine-tuned steps sample with the learned std, the frozen ones with DPPO's floored std
    assert [m.sampling_std(tf.constant(0.01), s, False).shape.rank for s in range(5)] == [0, 0, 0, 3, 3]
    np.testing.assert_allclose(m.sampling_std(tf.constant(0.01), 4, False).numpy().ravel(),
                               m.denoising_std().numpy()[1])
    # at the start: 1.5 x DPPO's stochastic std max(posterior std, floor) of steps t = 1, 0
    base = np.maximum(m.schedule.posterior_std[[1, 0]], 0.1)
    np.testing.assert_allclose(m.denoising_std().numpy(), np.repeat(1.5 * base[:, None], 2, 1), rtol=1e-5)
    learner = learner_of(m)
    cond = {"state": tf.random.normal((32, 1, 3), seed=4)}
    _, chain = m.act(cond, deterministic=False)
    values, lp = learner.score(cond, chain)
    batch = PPOBatch(cond, chain, tf.zeros(32), values, tf.random.normal((32,), seed=5), lp)
    rho = m.log_std_param.numpy()
    m.target_entropy = float(m.chain_entropy()) + 1.0  # below target: alpha must grow
    out = learner.update(batch, True, batch_size=8, update_epochs=1, vf_coef=0.5, ent_coef=0.0, target_kl=None)
    assert not np.allclose(m.log_std_param.numpy(), rho)
    assert out["alpha"] > 0.5
    assert {"alpha", "entropy", "std", "std_k0", "std_k1"} <= set(out)
    assert "policy_extra" in learner.checkpoint_groups() and "optimizer/extra1" in learner.checkpoint_groups()
    # the critic warm-up leaves the std and the temperature alone
    rho, alpha = m.log_std_param.numpy(), out["alpha"]
    out = learner.update(batch, False, batch_size=8, update_epochs=1, vf_coef=0.5, ent_coef=0.0, target_kl=None)
    np.testing.assert_array_equal(m.log_std_param.numpy(), rho)
    assert out["alpha"] == pytest.approx(alpha)


# the faithful mode -------------------------------------------------------------------------------------------
def test_faithful_loss_on_a_tiny_batch():
    """B = 3 env steps x K' = 3: pg = mean max(-A r + (alpha / C) l_new, -A clip(r)); the temperature loss is
    -log(alpha) (H_target - H_hat) with the estimate made on this (first) minibatch."""
    m = make(DPOERDiffusion, k=5, kp=3, gamma_denoising=0.5, clip_ploss_coef=0.2, clip_ploss_coef_base=0.1,
             clip_ploss_coef_rate=1.0, lambda_alpha_entropy=2.0, init_alpha=0.5, entropy_num_samples=8,
             act_steps=1)
    assert m.target_entropy == -2.0  # -T_a D_a
    new = np.array([[0.3, -0.2, 0.05], [0.0, 0.1, -0.3], [0.2, 0.0, 0.15]], np.float32)
    learner = learner_of(m)
    m.chain_log_probs = lambda c, ch: tf.constant(new)[:, :, None, None] * tf.ones((3, 3, 2, 2))
    adv = np.array([1.0, -1.0, 2.0], np.float32)
    ret = np.zeros(3, np.float32)
    out = learner.loss({"state": tf.zeros((3, 1, 3))}, tf.zeros((3, 4, 2, 2)), tf.constant(ret), tf.constant(ret),
                       tf.constant(adv), tf.zeros((3, 3)))
    a = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    k = np.arange(3)
    a = a[:, None] * 0.5 ** (2 - k)[None, :]
    ratio = np.exp(new)
    clip = (0.1 + 0.1 * (np.exp(k / 2) - 1) / (np.e - 1))[None, :]
    pg = np.mean(np.maximum(-a * ratio + 0.5 / 2.0 * new, -a * np.clip(ratio, 1 - clip, 1 + clip)))
    plain = np.mean(np.maximum(-a * ratio, -a * np.clip(ratio, 1 - clip, 1 + clip)))
    assert float(out["pg_loss"]) == pytest.approx(pg, rel=1e-5) and abs(pg - plain) > 1e-3
    h = float(m.entropy_estimate)
    assert h != 0.0 and int(m.minibatch_count) == 1
    assert float(out["extra_loss"]) == pytest.approx(-math.log(0.5) * (-2.0 - h), rel=1e-5)


def test_faithful_estimate_is_refreshed_every_delay_minibatches():
    m = make(DPOERDiffusion, delay_alpha_update=3, entropy_num_samples=8, entropy_num_states=4)
    learner = learner_of(m)
    cond = {"state": tf.random.normal((16, 1, 3), seed=6)}
    _, chain = m.act(cond, deterministic=False)
    values, lp = learner.score(cond, chain)
    batch = PPOBatch(cond, chain, tf.zeros(16), values, tf.random.normal((16,), seed=7), lp)
    seen = []
    estimate = m.estimate_entropy
    m.estimate_entropy = lambda c: estimate(c) + 0.0 * tf.reshape(tf.cast(tf.py_function(
        lambda: seen.append(int(m.minibatch_count)) or 0, [], tf.int32), tf.float32), [])
    out = learner.update(batch, True, batch_size=4, update_epochs=2, vf_coef=0.5, ent_coef=0.0, target_kl=None)
    # 8 minibatches: estimates on the 1st, 4th and 7th (the counter read is not ordered with its increment)
    assert int(m.minibatch_count) == 8 and len(seen) == 3 and list(np.diff(seen)) == [3, 3]
    assert out["alpha"] != pytest.approx(0.272) and out["entropy_estimate"] == pytest.approx(float(m.entropy_estimate))


def test_faithful_rollouts_draw_dppo_noise():
    """Same seed, same weights: DPOER's rollouts see exactly DPPO's actions, before and after an entropy estimate
    (its draws come from the entropy stream)."""
    dppo, dpoer = make(PPODiffusion, seed=7), make(DPOERDiffusion, seed=7, entropy_num_samples=8)
    for src, dst in ((dppo.network, dpoer.network), (dppo.actor_ft, dpoer.actor_ft)):
        for a, b in zip(src.weights, dst.weights):
            b.assign(a)
    cond = {"state": tf.random.normal((5, 1, 3), seed=8)}
    np.testing.assert_array_equal(dppo.act(cond, False)[0].numpy(), dpoer.act(cond, False)[0].numpy())
    dpoer.estimate_entropy(cond)
    np.testing.assert_array_equal(dppo.act(cond, False)[0].numpy(), dpoer.act(cond, False)[0].numpy())


def test_dppo_has_no_extension_hooks():
    m = make(PPODiffusion)
    learner = learner_of(m)
    assert learner.extra_optimizers == [] and set(learner.checkpoint_groups()) == {"optimizer/actor",
                                                                                    "optimizer/critic"}


# the runner ---------------------------------------------------------------------------------------------------
DPOER_MODELS = {
    "faithful": {"_target_": "dppo.algos.dpoer.DPOERDiffusion", "lambda_alpha_entropy": 1000.0,
                 "delay_alpha_update": 3, "act_steps": 2, "entropy_num_states": 4, "entropy_num_samples": 8},
    "sound": {"_target_": "dppo.algos.dpoer.PPOEntDiffusion", "init_alpha": 0.1, "alpha_lr": 0.05},
}


@pytest.mark.parametrize("mode", ["faithful"])  # the sound mode's state goes through the same hooks (~20 s each)
def test_runner_logs_and_resumes_dpoer_exactly(tmp_path, avoid_norm, mode):
    """Two iterations in one go equal one, a checkpoint, and a resumed second (alpha, the estimate, the counter,
    the temperature's optimizer and the entropy stream are all in the checkpoint)."""
    from test_finetune_runner import avoid_cfg

    from dppo.runners.ppo import TrainPPODiffusionAgent

    def cfg(folder, n_itr):
        c = avoid_cfg(tmp_path / folder, avoid_norm, **{"train.n_train_itr": n_itr})
        c.model.update(DPOER_MODELS[mode])
        return c

    history = TrainPPODiffusionAgent(cfg("a", 2)).run()
    keys = ["loss/alpha", "loss/pg_loss", "loss/approx_kl"] + (
        ["loss/entropy_estimate"] if mode == "faithful" else ["loss/entropy", "loss/std_k0", "loss/std_k3"])
    assert all(k in history[-1] for k in keys) and history[-1]["loss/alpha"] != history[0]["loss/alpha"]
    TrainPPODiffusionAgent(cfg("b", 1)).run()
    c = cfg("b", 2)
    c.resume = True
    again = TrainPPODiffusionAgent(c).run()
    for key in keys:
        assert again[-1][key] == pytest.approx(history[-1][key], rel=1e-5, abs=1e-7), key
