"""The replay-based diffusion baselines (DIPO, DQL, QSM, IDQL): each loss and target against numbers worked out
here, the shared replay buffer, truncation handling in the rollout, and exact resume of the runner."""

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces
from omegaconf import OmegaConf

from dppo.algos.dipo import ADAM_EPS, DIPODiffusion, action_gradient
from dppo.algos.idql import select_candidates
from dppo.algos.qsm import QSMDiffusion, q_action_gradient
from dppo.algos.replay_common import (
    double_q_loss,
    expectile_loss,
    normalized_q_loss,
    polyak_update,
    td_target,
)
from dppo.envs.bandit import TwoStepBandit
from dppo.envs.vector import SyncVectorEnv
from dppo.envs.wrappers import MultiStep
from dppo.nets.critics import CriticObsAct
from dppo.nets.diffusion_mlp import DiffusionMLP
from dppo.runners.replay import ReplayBuffer
from dppo.runners.replay_diffusion import TrainReplayDiffusionAgent
from dppo.runners.rollout import rollout
from dppo.utils import checkpoint as ckpt

O, A, T = 3, 2, 2  # obs dim, action dim, chunk length of the small models


class QuadraticCritic:
    """Q1(s, a) = -sum (a - c1)^2, Q2 = -sum (a - c2)^2 + offset: gradients known in closed form."""

    def __init__(self, c1, c2, offset=0.0):
        self.c1, self.c2, self.offset = (tf.constant(c1, tf.float32), tf.constant(c2, tf.float32), offset)

    def __call__(self, cond, a):
        q1 = -tf.reduce_sum(tf.square(a - self.c1), axis=(1, 2))
        q2 = -tf.reduce_sum(tf.square(a - self.c2), axis=(1, 2)) + self.offset
        return q1, q2


def small_nets():
    return (DiffusionMLP(A, T, O, time_dim=4, mlp_dims=[16, 16, 16], residual_style=True),
            CriticObsAct(O, A, T, mlp_dims=[16, 16]))


MODEL_KW = dict(horizon_steps=T, obs_dim=O, action_dim=A, denoising_steps=5, seed=1)


def filled_buffer(n=40, capacity=64, seed=0):
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(capacity, (1, O), (T, A), seed=seed)
    buf.add(rng.normal(size=(n, 1, O)), rng.uniform(-1, 1, (n, T, A)), rng.normal(size=n),
            rng.normal(size=(n, 1, O)), (rng.uniform(size=n) < 0.2).astype(np.float32))
    return buf


# ------------------------------------------------------------------------------------------ shared math


def test_polyak_update_moves_targets_by_tau():
    target, source = [tf.Variable([1.0, 2.0]), tf.Variable(3.0)], [tf.Variable([5.0, -2.0]), tf.Variable(1.0)]
    polyak_update(target, source, 0.25)
    np.testing.assert_allclose(target[0].numpy(), [2.0, 1.0])  # 0.75 * 1 + 0.25 * 5, 0.75 * 2 - 0.25 * 2
    np.testing.assert_allclose(target[1].numpy(), 2.5)


def test_td_target_cuts_only_at_termination():
    y = td_target(tf.constant([1.0, 1.0, 0.5]), tf.constant([0.0, 1.0, 0.0]), tf.constant([10.0, 10.0, -2.0]), 0.9)
    np.testing.assert_allclose(y.numpy(), [10.0, 1.0, 0.5 - 1.8])


def test_double_q_and_expectile_losses():
    loss = double_q_loss(tf.constant([1.0, 3.0]), tf.constant([0.0, 2.0]), tf.constant([2.0, 2.0]))
    np.testing.assert_allclose(loss.numpy(), (1 + 1) / 2 + (4 + 0) / 2)
    # u = [1, -2, 0.5]: weights 0.8, 0.2, 0.8 -> (0.8 + 0.2 * 4 + 0.8 * 0.25) / 3
    np.testing.assert_allclose(expectile_loss(tf.constant([1.0, -2.0, 0.5]), 0.8).numpy(), 1.8 / 3, rtol=1e-6)


def test_normalized_q_loss_swaps_heads_and_holds_the_denominator():
    q1, q2 = tf.Variable([1.0, 3.0]), tf.Variable([-2.0, 4.0])
    cases = ((True, -2.0 / 3.0, -1 / (2 * 3.0), 0.0), (False, -1.0 / 2.0, 0.0, -1 / (2 * 2.0)))
    for first, want, grad1, grad2 in cases:
        with tf.GradientTape() as tape:
            loss = normalized_q_loss(q1, q2, tf.constant(first))
        g1, g2 = tape.gradient(loss, [q1, q2])
        np.testing.assert_allclose(loss.numpy(), want, rtol=1e-6)  # -mean(Q_a) / mean|Q_b|
        np.testing.assert_allclose(g1.numpy(), [grad1, grad1], rtol=1e-6)  # no gradient through mean|Q_b|
        np.testing.assert_allclose(g2.numpy(), [grad2, grad2], rtol=1e-6)


# ------------------------------------------------------------------------------------------ DIPO


def numpy_action_gradient(a, c1, steps, lr, max_norm):
    """Adam (0.9, 0.999, eps 1e-5) on -sum Q1 with Q1 = -sum (a - c1)^2 (the min head), norm clip, clamp."""
    m, v = np.zeros_like(a), np.zeros_like(a)
    for k in range(1, steps + 1):
        g = 2.0 * (a - c1)  # d/da of sum (a - c1)^2
        norm = np.sqrt((g**2).sum())
        g = g * min(1.0, max_norm / norm)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        a = np.clip(a - lr * (m / (1 - 0.9**k)) / (np.sqrt(v / (1 - 0.999**k)) + ADAM_EPS), -1.0, 1.0)
    return a


def test_dipo_action_gradient_clips_the_norm_and_clamps():
    rng = np.random.default_rng(0)
    a0 = rng.uniform(-1, 1, (5, T, A)).astype(np.float32)
    c1 = np.full((T, A), 3.0, np.float32)  # the optimum lies outside [-1, 1]: the clamp is reached
    critic = QuadraticCritic(c1, c1, offset=100.0)  # Q2 > Q1 everywhere: min(Q1, Q2) = Q1
    for lr, steps, max_norm in ((0.3, 4, 0.1 * A * T), (1e-3, 3, 0.05), (1e-3, 3, 1e3)):
        got = action_gradient(critic, {}, tf.constant(a0), steps, lr, max_norm).numpy()
        np.testing.assert_allclose(got, numpy_action_gradient(a0.astype(np.float64), c1, steps, lr, max_norm),
                                   atol=1e-5)
    got = action_gradient(critic, {}, tf.constant(a0), 4, 0.3, 0.1 * A * T).numpy()
    assert got.max() == 1.0 and np.abs(got).max() <= 1.0


def test_dipo_update_writes_improved_actions_back_to_the_buffer():
    buf = filled_buffer()
    before = buf.actions[: len(buf)].copy()
    actor, critic = small_nets()
    model = DIPODiffusion(actor, critic, action_lr=0.01, action_gradient_steps=3, **MODEL_KW)
    model.update(buf.push(), 1, 8, False)  # critic warm-up: nothing is rewritten
    buf.pull(model.buffer_writes)
    np.testing.assert_array_equal(buf.actions[: len(buf)], before)
    out = model.update(buf.push(), 2, 8, True)
    buf.pull(model.buffer_writes)
    after = buf.actions[: len(buf)]
    changed = np.flatnonzero(np.abs(after - before).reshape(len(buf), -1).max(axis=1) > 0)
    assert 1 <= len(changed) <= 16  # two fresh minibatches of 8 rows (drawn with replacement)
    # an Adam step moves each entry by at most ~lr; a row drawn in both minibatches is improved twice
    assert np.abs(after - before).max() <= 2 * 3 * 0.01 * 1.001
    assert np.abs(after).max() <= 1.0 and set(out) == {"critic", "q", "actor"}
    # the rows the update rewrote are what the graph view holds
    np.testing.assert_array_equal(buf.graph().vars["actions"][: len(buf)].numpy(), after)


# ------------------------------------------------------------------------------------------ QSM


def test_qsm_target_score_is_the_mean_head_gradient_at_the_noisy_action():
    rng = np.random.default_rng(1)
    c1, c2 = rng.normal(size=(T, A)).astype(np.float32), rng.normal(size=(T, A)).astype(np.float32)
    critic = QuadraticCritic(c1, c2)
    x = rng.normal(size=(4, T, A)).astype(np.float32)
    g = q_action_gradient(critic, {}, tf.constant(x)).numpy()
    np.testing.assert_allclose(g, 0.5 * (-2 * (x - c1) - 2 * (x - c2)), rtol=1e-5, atol=1e-6)

    actor, net_critic = small_nets()
    model = QSMDiffusion(actor, net_critic, q_grad_coeff=10.0, **MODEL_KW)
    model.critic = critic  # Q with a known gradient
    a = rng.uniform(-1, 1, (4, T, A)).astype(np.float32)
    t = np.array([0, 2, 4, 1], np.int32)
    noise = rng.normal(size=(4, T, A)).astype(np.float32)
    cond = {"state": tf.constant(rng.normal(size=(4, 1, O)), tf.float32)}
    abar = model.schedule.alphas_cumprod[t][:, None, None]
    x_t = np.sqrt(abar) * a + np.sqrt(1 - abar) * noise
    eps = model.network(tf.constant(x_t, tf.float32), tf.constant(t), cond).numpy()
    want = np.mean((-eps - 10.0 * 0.5 * (-2 * (x_t - c1) - 2 * (x_t - c2))) ** 2)
    got = model.score_target_loss(tf.constant(a), cond, tf.constant(t), tf.constant(noise)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4)


# ------------------------------------------------------------------------------------------ IDQL


def test_idql_candidate_selection_greedy_and_expectile_weights():
    q = tf.constant([[1.0, 5.0], [-1.0, 4.0], [2.0, 0.0]])  # (S=3 candidates, B=2 states)
    np.testing.assert_array_equal(select_candidates(q, None, None).numpy(), [2, 0])
    v = tf.constant([0.0, 4.5])
    # state 0: Q - V = [1, -1, 2] -> weights [.7, .3, .7] / 1.7, cdf [.412, .588, 1]
    # state 1: Q - V = [.5, -.5, -4.5] -> weights [.7, .3, .3] / 1.3, cdf [.538, .769, 1]
    for u0, u1, want in ((0.1, 0.1, [0, 0]), (0.5, 0.6, [1, 1]), (0.59, 0.77, [2, 2]), (0.999, 0.5, [2, 0])):
        got = select_candidates(q, v, tf.constant([u0, u1])).numpy()
        np.testing.assert_array_equal(got, want)
    # drawn frequencies follow the normalised weights
    u = tf.constant(np.random.default_rng(0).uniform(size=20000), tf.float32)
    picks = select_candidates(tf.tile(q[:, :1], [1, 20000]), tf.zeros(20000), u).numpy()
    np.testing.assert_allclose(np.bincount(picks, minlength=3) / 20000, [0.7 / 1.7, 0.3 / 1.7, 0.7 / 1.7], atol=0.01)


# ------------------------------------------------------------------------------------------ buffer


def test_buffer_is_fifo_and_saves_its_sampler(tmp_path):
    buf = ReplayBuffer(5, (1, 3), (2, 2), seed=4)
    for i in range(7):
        buf.add(np.full((1, 1, 3), i), np.full((1, 2, 2), i), np.array([i]), np.full((1, 1, 3), i + 1),
                np.array([0.0]))
    assert len(buf) == 5 and buf.ptr == 2
    np.testing.assert_array_equal(buf.rewards, [5, 6, 2, 3, 4])  # rows 0 and 1 (the oldest) overwritten
    view = buf.push()
    idx, rows = view.sample(64)
    idx = idx.numpy()
    assert idx.min() >= 0 and idx.max() < 5 and len(set(idx.tolist())) < 64  # uniform, with replacement
    np.testing.assert_array_equal(rows["rewards"].numpy(), buf.rewards[idx])
    np.testing.assert_array_equal(rows["next_obs"].numpy()[:, 0, 0], buf.rewards[idx] + 1)
    buf.save(tmp_path / "b.npz", {"itr": 3})
    next_draw = view.sample(16)[0].numpy()
    other = ReplayBuffer(5, (1, 3), (2, 2), seed=99)
    assert other.load(tmp_path / "b.npz") == {"itr": 3}
    assert other.ptr == 2 and len(other) == 5
    for k in ReplayBuffer.FIELDS:
        np.testing.assert_array_equal(getattr(other, k), getattr(buf, k))
    np.testing.assert_array_equal(other.push().sample(16)[0].numpy(), next_draw)  # the sampler continues exactly
    # a push copies only rows added since the last one; a partial buffer samples only its filled rows
    small = ReplayBuffer(10, (1, 3), (2, 2))
    small.add(np.zeros((3, 1, 3)), np.zeros((3, 2, 2)), np.array([1.0, 2.0, 3.0]), np.zeros((3, 1, 3)), np.zeros(3))
    assert set(small.push().sample(200)[1]["rewards"].numpy().tolist()) == {1.0, 2.0, 3.0}


# ------------------------------------------------------------------------------------------ truncation


class CounterEnv(gym.Env):
    """obs = number of steps taken; never terminates (the multi-step wrapper truncates it)."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, np.float32), 1.0, False, False, {}


def test_truncated_step_stores_the_final_observation_and_keeps_the_live_one():
    venv = SyncVectorEnv([lambda: MultiStep(CounterEnv(), 1, 1, max_episode_steps=3, reset_within_step=True)])
    obs, _ = venv.reset(seed=0)
    ro = rollout(venv, lambda c: (tf.zeros((1, 1, 1)), None), obs, np.ones(1), 5, 1, keep_next_obs=True)
    np.testing.assert_array_equal(ro["obs"]["state"][:, 0, 0, 0], [0, 1, 2, 0, 1])  # the policy saw the reset obs
    np.testing.assert_array_equal(ro["next_obs"]["state"][:, 0, 0, 0], [1, 2, 3, 1, 2])  # s' = final obs 3
    np.testing.assert_array_equal(ro["truncated"][:, 0], [False, False, True, False, False])
    assert not ro["terminated"].any()  # a time limit bootstraps: td_target keeps gamma * V(s' = 3)


# ------------------------------------------------------------------------------------------ runner


gym.register("DppoTestReplayBandit-v0", entry_point=TwoStepBandit)

METHODS = {
    "dipo": ("dppo.algos.dipo.DIPODiffusion", {"target_ema_rate": 0.05, "action_lr": 0.03,
                                               "action_gradient_steps": 3}),
    "dql": ("dppo.algos.dql.DQLDiffusion", {"target_ema_rate": 0.05, "eta": 1.0}),
    "qsm": ("dppo.algos.qsm.QSMDiffusion", {"critic_tau": 0.05, "q_grad_coeff": 10}),
    "idql": ("dppo.algos.idql.IDQLDiffusion", {"critic_tau": 0.05, "eval_sample_num": 8, "eval_deterministic": True,
                                               "use_expectile_exploration": True}),
}


def bandit_cfg(logdir, method, n_itr=3, **over):
    target, train = METHODS[method]
    critic = {"_target_": "dppo.nets.critics.CriticObsAct", "cond_dim": 1, "action_dim": 2, "action_steps": 1,
              "mlp_dims": [32, 32], "activation_type": "Mish"}
    model = {"_target_": target, "min_sampling_denoising_std": 0.1, "randn_clip_value": 3,
             "actor": {"_target_": "dppo.nets.diffusion_mlp.DiffusionMLP", "time_dim": 8, "mlp_dims": [32, 32, 32],
                       "residual_style": True, "cond_dim": 1, "horizon_steps": 1, "action_dim": 2},
             "horizon_steps": 1, "obs_dim": 1, "action_dim": 2, "denoising_steps": 5}
    if method == "idql":
        model.update(critic_q=critic, critic_v={"_target_": "dppo.nets.critics.CriticObs", "cond_dim": 1,
                                                "mlp_dims": [32, 32]})
    else:
        model["critic"] = critic
    cfg = OmegaConf.create({
        "_target_": "dppo.runners.replay_diffusion.TrainReplayDiffusionAgent", "logdir": str(logdir), "seed": 3,
        "obs_dim": 1, "action_dim": 2, "horizon_steps": 1, "act_steps": 1, "cond_steps": 1, "denoising_steps": 5,
        "env": {"n_envs": 8, "name": "DppoTestReplayBandit-v0", "max_episode_steps": 10, "reset_at_iteration": True,
                "best_reward_threshold_for_success": 1,
                "wrappers": {"multi_step": {"n_obs_steps": 1, "n_action_steps": 1, "max_episode_steps": 10,
                                            "reset_within_step": True}}},
        "train": {"n_train_itr": n_itr, "n_critic_warmup_itr": 1, "n_steps": 4, "gamma": 0.9, "actor_lr": 1e-3,
                  "critic_lr": 1e-3, "save_model_freq": 1, "val_freq": 100, "force_train": True, "batch_size": 16,
                  "replay_ratio": 2, "buffer_size": 1000, "scale_reward_factor": 1.0, **train},
        "model": model, "wandb": None})
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_runner_resume_reproduces_the_next_iteration_exactly(tmp_path):
    full = TrainReplayDiffusionAgent(bandit_cfg(tmp_path / "a", "dipo"))
    history = full.run()
    assert [h["itr"] for h in history] == [0, 1, 2] and "loss/actor" not in history[0] and "loss/actor" in history[1]
    assert history[-1]["buffer_size"] == 3 * 4 * 8 and history[-1]["env_steps"] == 3 * 4 * 8
    assert [p.name for p in (tmp_path / "a" / "checkpoint").glob("replay_*.npz")] == ["replay_2.npz"]
    part = TrainReplayDiffusionAgent(bandit_cfg(tmp_path / "b", "dipo", n_itr=2))
    part.run()
    cfg = bandit_cfg(tmp_path / "b", "dipo")
    cfg.resume = True
    resumed = TrainReplayDiffusionAgent(cfg)
    assert resumed.itr == 2 and len(resumed.buffer) == 2 * 4 * 8
    last = resumed.run()[-1]
    for key, value in history[-1].items():
        if not key.startswith("time/"):
            assert last[key] == value, key
    for group, variables in full.model.checkpoint_groups().items():
        for v, w in zip(variables, resumed.model.checkpoint_groups()[group]):
            np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=group)
    np.testing.assert_array_equal(full.buffer.actions, resumed.buffer.actions)  # DIPO's rewritten actions too
    state = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint" / "state_2.npz")
    assert {"network", "actor_target", "critic", "critic_target", "optimizer/actor"} <= ckpt.groups_in(state)


def test_runner_refuses_a_method_key_the_model_does_not_take(tmp_path):
    from dppo.utils.validate import ConfigError

    with pytest.raises(ConfigError, match="train.q_grad_coeff"):
        TrainReplayDiffusionAgent(bandit_cfg(tmp_path, "dql", **{"train.q_grad_coeff": 10}))
    with pytest.raises(ConfigError, match="horizon_steps == act_steps"):
        TrainReplayDiffusionAgent(bandit_cfg(tmp_path, "dql", horizon_steps=2))
