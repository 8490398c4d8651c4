"""Single-step PPO (Gaussian / GMM / exact-likelihood diffusion): the loss on hand-made numbers, gradient
accumulation, the exact likelihood against a closed form, and Gaussian fine-tuning on a bandit."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from dppo.algos.ppo import PPOBatch, PPOLearner
from dppo.algos.ppo_exact_diffusion import PPOExactDiffusion, ode_grid
from dppo.algos.ppo_gaussian import PPOGaussian
from dppo.algos.ppo_gmm import PPOGMM
from dppo.nets.critics import CriticObs
from dppo.nets.diffusion_mlp import DiffusionMLP
from dppo.nets.gaussian_mlp import Gaussian_MLP
from dppo.nets.gmm_mlp import GMM_MLP
from dppo.policies.schedule import cosine_beta_schedule
from dppo.runners.ppo_gaussian import TrainPPOGaussianAgent
from dppo.utils.optim import AdamW


def gaussian_ppo(clip=0.1, **kw):
    mk = lambda: Gaussian_MLP(2, 2, 3, mlp_dims=[16, 16], fixed_std=0.1, learn_fixed_std=True)  # noqa: E731
    return PPOGaussian(mk(), CriticObs(3, mlp_dims=[16, 16]), actor_ft=mk(), horizon_steps=2, clip_ploss_coef=clip,
                       seed=1, **kw)


def learner_of(model, lr=1e-2, grad_accumulate=1):
    return PPOLearner(model, AdamW(model.trainable_actor_variables(), lr), AdamW(model.critic.trainable_variables, lr),
                      seed=0, grad_accumulate=grad_accumulate)


def batch_of(model, n=8, seed=0):
    """A rollout-like batch, computed eagerly (no sampler / scoring graphs to trace)."""
    rng = np.random.default_rng(seed)
    cond = {"state": tf.constant(rng.normal(size=(n, 1, 3)), tf.float32)}
    samples = tf.constant(rng.uniform(-0.8, 0.8, size=(n, model.horizon_steps, model.action_dim)), tf.float32)
    log_probs, _ = model.transition_log_probs(cond, samples)
    return PPOBatch(cond, samples, tf.constant(rng.normal(size=n), tf.float32), model.critic(cond),
                    tf.constant(rng.normal(size=n), tf.float32), log_probs)


def test_gaussian_ppo_loss_matches_numpy():
    model = gaussian_ppo(clip=0.1)
    b = batch_of(model)
    mean, std = (t.numpy() for t in model.network(b.cond))
    a = b.samples.numpy().reshape(8, 4)
    new_lp = (-0.5 * ((a - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).mean(-1)
    np.testing.assert_allclose(b.log_probs[:, 0], np.clip(new_lp, -5, 2), rtol=1e-5, atol=1e-5)  # mean over dims
    old_lp = new_lp - np.linspace(-0.3, 0.3, 8)  # ratios around 1, some clipped
    terms = learner_of(model).loss(b.cond, b.samples, b.returns, b.values, b.advantages,
                                   tf.constant(np.clip(old_lp, -5, 2)[:, None], tf.float32))
    ratio = np.exp(np.clip(new_lp, -5, 2) - np.clip(old_lp, -5, 2))
    adv = b.advantages.numpy()
    adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    pg = np.maximum(-adv * ratio, -adv * np.clip(ratio, 0.9, 1.1)).mean()
    np.testing.assert_allclose(terms["pg_loss"], pg, rtol=1e-5)
    np.testing.assert_allclose(terms["clipfrac"], np.mean(np.abs(ratio - 1) > 0.1))
    np.testing.assert_allclose(terms["approx_kl"], np.mean(ratio - 1 - np.log(ratio)), rtol=1e-4)
    v = model.critic(b.cond).numpy()
    np.testing.assert_allclose(terms["v_loss"], 0.5 * np.mean((v - b.returns.numpy()) ** 2), rtol=1e-5)
    entropy = (0.5 + 0.5 * np.log(2 * np.pi) + np.log(std)).mean()
    np.testing.assert_allclose(terms["entropy_loss"], -entropy, rtol=1e-5)
    np.testing.assert_allclose(terms["std"], 0.1, rtol=1e-5)


def test_gmm_ppo_scores_the_joint_log_prob_clamped():
    mk = lambda: GMM_MLP(2, 2, 3, mlp_dims=[16], num_modes=3, fixed_std=0.1)  # noqa: E731
    model = PPOGMM(mk(), CriticObs(3, mlp_dims=[16]), actor_ft=mk(), horizon_steps=2)
    b = batch_of(model)
    joint = np.clip(model.log_prob(b.cond, b.samples).numpy(), -5, 2)
    np.testing.assert_allclose(b.log_probs[:, 0], joint, rtol=1e-6)
    terms = learner_of(model).loss(b.cond, b.samples, b.returns, b.values, b.advantages, b.log_probs)
    assert float(terms["ratio"]) == pytest.approx(1.0, abs=1e-5)  # same policy: ratio 1
    assert model.actor is not None and not model.actor.trainable_weights  # frozen initial copy


def test_update_with_gradient_accumulation_keeps_the_frozen_copy():
    grad_accumulate = 2  # (the plain path runs in the bandit test below)
    model = gaussian_ppo()
    learner = learner_of(model, grad_accumulate=grad_accumulate)
    actor_opt, critic_opt = learner.actor_optimizer, learner.critic_optimizer
    before = [w.numpy() for w in model.network.weights]
    frozen = [w.numpy() for w in model.actor.weights]
    out = learner.update(batch_of(model, n=16), True, batch_size=4, update_epochs=2, vf_coef=0.5, ent_coef=0.01,
                         target_kl=None)
    assert out["n_minibatches"] == 8 and np.isfinite(out["loss"])
    assert int(actor_opt.iterations.numpy()) == 8 // grad_accumulate == int(critic_opt.iterations.numpy())
    assert any(np.abs(w.numpy() - v).max() > 0 for w, v in zip(model.network.weights, before))
    assert all(np.array_equal(w.numpy(), v) for w, v in zip(model.actor.weights, frozen))
    learner.update(batch_of(model, n=16), False, batch_size=4, update_epochs=2, vf_coef=0.5, ent_coef=0.01,
                   target_kl=None)  # critic warm-up: the actor does not move
    assert int(actor_opt.iterations.numpy()) == 8 // grad_accumulate
    assert int(critic_opt.iterations.numpy()) == 16 // grad_accumulate


# exact likelihood -------------------------------------------------------------------------------------------
class OptimalEps(keras.layers.Layer):
    """E[eps | x_t = x] for data N(mu, sigma^2 I) at (fractional) DDPM index t of the ODE's schedule."""

    def __init__(self, mu, sigma, denoising_steps, min_beta):
        super().__init__()
        self.mu, self.var = mu, sigma**2
        log_abar = np.concatenate([[0.0], np.cumsum(np.log1p(-np.maximum(cosine_beta_schedule(denoising_steps),
                                                                           min_beta)))])
        self.log_abar = tf.constant(log_abar, tf.float32)  # at index -1 .. K-1

    def call(self, x, t, cond, training=False):
        pos = tf.cast(t, tf.float32) + 1.0
        lo = tf.minimum(tf.floor(pos), float(len(self.log_abar) - 2))
        w = pos - lo
        lo = tf.cast(lo, tf.int32)
        log_abar = (1 - w) * tf.gather(self.log_abar, lo) + w * tf.gather(self.log_abar, lo + 1)
        abar = tf.reshape(tf.exp(log_abar), (-1, 1, 1))
        return tf.sqrt(1 - abar) * (x - tf.sqrt(abar) * self.mu) / (abar * self.var + 1 - abar)


def exact_model(actor, actor_ft, k=20, **kw):
    return PPOExactDiffusion(actor=actor, actor_ft=actor_ft, critic=CriticObs(1, mlp_dims=[8]),
                             ft_denoising_steps=k, horizon_steps=2, obs_dim=1, action_dim=2, denoising_steps=k,
                             sde_min_beta=1e-10, **kw)


def test_exact_likelihood_matches_the_gaussian_density():
    """With the optimal eps-network for N(mu, sigma^2) data the probability-flow ODE must return that density:
    Euler with 200 steps is within 0.03 nats per dimension for |a - mu| <= 1.5 sigma (first order: the error
    halves with the step; about 0.023 per dimension here at the mean)."""
    k, mu, sigma = 20, 0.3, 0.25
    model = exact_model(OptimalEps(-0.4, 0.5, k, 1e-10), OptimalEps(mu, sigma, k, 1e-10), k=k,
                        sde_step_size=1 / 200, min_network_time=-1.0, sde_num_epsilon=2)
    a = mu + sigma * np.array([[[-1.5, -1.0], [0.0, 0.5]], [[1.5, 0.2], [-0.7, 1.2]], [[0.0, 0.0], [0.0, 0.0]]])
    got = model.exact_log_prob({"state": tf.zeros((3, 1, 1))}, tf.constant(a, tf.float32)).numpy()
    expected = (-0.5 * ((a - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)).sum((1, 2))
    # all steps are fine-tuned steps: drift AND divergence come from actor_ft (the base network models
    # N(-0.4, 0.5^2); the reference's divergence-from-base quirk would be off by about a nat)
    np.testing.assert_allclose(got, expected, atol=0.03 * 4)


def test_ode_grid_time_scale_and_network_choice():
    steps = ode_grid(20, 1e-4, 0.05, 1e-10)
    assert len(steps) == 20 and sum(s[0] for s in steps) == pytest.approx(1 - 1e-4)
    log_abar_1 = -sum(du * beta for du, beta, *_ in ode_grid(20, 0.0, 1 / 20, 1e-10))
    assert log_abar_1 == pytest.approx(np.log(np.cumprod(1 - cosine_beta_schedule(20))[-1]), rel=1e-6)
    assert [s[4] for s in steps][:3] == [0, 0, 1] and steps[-1][4] == 18  # tau = uK - 1 clamped to >= 0


def test_exact_ppo_update_trains_actor_ft_only():
    net = lambda: DiffusionMLP(2, 2, 1, time_dim=4, mlp_dims=[8, 8])  # noqa: E731
    # K = 4, K' = 1; two Euler steps: u = 1e-4 (index 0, actor_ft) and u = 0.5001 (index 1, frozen base)
    model = PPOExactDiffusion(actor=net(), actor_ft=net(), critic=CriticObs(1, mlp_dims=[8]), ft_denoising_steps=1,
                              horizon_steps=2, obs_dim=1, action_dim=2, denoising_steps=4, sde_step_size=0.5,
                              log_prob_clamp=None)  # (an untrained net's 4-step estimate is below the -5 clamp)
    learner = learner_of(model)
    cond = {"state": tf.random.stateless_normal((8, 1, 1), (0, 0))}
    stored = tf.random.stateless_normal((8, 2, 2), (0, 1)) * 0.5  # (act() stores the sampler's final chunk)
    values, log_probs = learner.score(cond, stored)
    assert [s[4] for s in model.ode_steps] == [0, 1]
    assert log_probs.shape == (8, 1) and np.all(np.isfinite(log_probs))
    assert model.ppo_clip.numpy().tolist() == [pytest.approx(0.01)]  # one scalar clip, not DPPO's per-step one
    bits = model.exact_log_prob(cond, stored).numpy() / (np.log(2) * 4)  # reported in bits per dimension
    np.testing.assert_allclose(log_probs[:, 0], bits, rtol=0.2)  # (different Hutchinson probes)
    base, ft = [w.numpy() for w in model.network.weights], [w.numpy() for w in model.actor_ft.weights]
    batch = PPOBatch(cond, stored, tf.ones(8), values, tf.range(8, dtype=tf.float32), log_probs)
    out = learner.update(batch, True, batch_size=4, update_epochs=1, vf_coef=0.5, ent_coef=0.0, target_kl=None)
    assert np.isfinite(out["loss"]) and out["n_minibatches"] == 2
    assert all(np.array_equal(w.numpy(), v) for w, v in zip(model.network.weights, base))
    assert any(np.abs(w.numpy() - v).max() > 0 for w, v in zip(model.actor_ft.weights, ft))


# the runner ---------------------------------------------------------------------------------------------------


def bandit_cfg(logdir, n_itr=10):
    return OmegaConf.create({
        "_target_": "dppo.runners.ppo_gaussian.TrainPPOGaussianAgent", "logdir": str(logdir), "seed": 3,
        "obs_dim": 1, "action_dim": 2, "horizon_steps": 1, "act_steps": 1, "cond_steps": 1,
        "env": {"n_envs": 16, "name": "DppoTestBandit-v0", "max_episode_steps": 16,
                "reset_at_iteration": True, "best_reward_threshold_for_success": 1,
                "wrappers": {"multi_step": {"n_obs_steps": 1, "n_action_steps": 1, "reset_within_step": True}}},
        "train": {"n_train_itr": n_itr, "n_critic_warmup_itr": 0, "n_steps": 8, "gamma": 0.99, "actor_lr": 1e-2,
                  "critic_lr": 1e-2, "save_model_freq": 100, "val_freq": 100, "force_train": True,
                  "reward_scale_running": False, "gae_lambda": 0.95, "batch_size": 64, "update_epochs": 4,
                  "vf_coef": 0.5, "target_kl": 1.0},
        "model": {"_target_": "dppo.algos.ppo_gaussian.PPOGaussian", "clip_ploss_coef": 0.2, "randn_clip_value": 3,
                  "actor": {"_target_": "dppo.nets.gaussian_mlp.Gaussian_MLP", "mlp_dims": [32, 32],
                            "activation_type": "ReLU", "fixed_std": 0.3, "learn_fixed_std": True, "std_max": 0.5,
                            "cond_dim": 1, "horizon_steps": 1, "action_dim": 2},
                  "critic": {"_target_": "dppo.nets.critics.CriticObs", "cond_dim": 1, "mlp_dims": [32, 32]},
                  "horizon_steps": 1},
    })


def test_gaussian_fine_tuning_raises_return_on_a_bandit(tmp_path):
    agent = TrainPPOGaussianAgent(bandit_cfg(tmp_path / "run"))
    history = agent.run()
    first = np.mean([h["train/avg_episode_reward"] for h in history[:2]])
    last = np.mean([h["train/avg_episode_reward"] for h in history[-2:]])
    assert last > first + 0.5, (first, last)
    assert "loss/std" in history[-1] and "loss/entropy" in history[-1]
    assert (tmp_path / "run" / "checkpoint" / f"state_{len(history) - 1}.npz").is_file()


def test_eval_agent_runs_the_fine_tuned_gaussian_policy(tmp_path):
    from dppo.runners.evaluate import EvalGaussianAgent
    cfg = bandit_cfg(tmp_path / "ft", n_itr=3)
    agent = TrainPPOGaussianAgent(cfg)
    agent.run()
    eval_cfg = OmegaConf.create({
        "logdir": str(tmp_path / "ev"), "seed": 0, "n_steps": 4, "act_steps": 1, "env": cfg.env,
        "base_policy_path": str(tmp_path / "ft" / "checkpoint" / "state_2.npz"),
        "model": {"_target_": "dppo.policies.gaussian.GaussianModel", "network": cfg.model.actor,
                  "horizon_steps": 1}})
    ev = EvalGaussianAgent(eval_cfg)
    assert ev.weights == "fine-tuned"
    for a, b in zip(ev.model.network.weights, agent.model.network.weights):  # the trained policy, not the frozen copy
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(np.abs(a.numpy() - b.numpy()).max() > 0 for a, b in zip(agent.model.actor.weights,
                                                                          agent.model.network.weights))
    assert ev.run()["num_episode"] == 32


def test_pixel_agent_shifts_every_stored_frame():
    class Fake:
        pass

    from dppo.nets.vit import RandomShiftsAug
    fake = Fake()
    fake.aug = RandomShiftsAug(pad=4, seed=0)
    fake._shift = tf.function(lambda x: fake.aug(x))
    rgb = np.random.default_rng(0).uniform(0, 255, size=(3, 2, 1, 3, 16, 16)).astype(np.float32)
    out = TrainPPOGaussianAgent.augment_frames(fake, rgb)
    assert out.shape == rgb.shape and not np.array_equal(out, rgb)
    padded = np.pad(rgb.reshape(6, 3, 16, 16), ((0, 0), (0, 0), (4, 4), (4, 4)), "edge")
    for i, frame in enumerate(out.reshape(6, 3, 16, 16)):  # each frame is some crop of its padded self
        assert any(np.array_equal(frame, padded[i, :, dy:dy + 16, dx:dx + 16]) for dy in range(9) for dx in range(9))
