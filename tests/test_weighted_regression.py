"""DRWR and DAWR: reward-to-go and weights, TD(lambda) targets, advantage weights, the critic loss (fixed vs the
reference's broadcast), learning on a bandit, and exact resume of the weighted-regression runner."""

import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from dppo.algos.awr import StepBuffer, advantage_weights, critic_loss, td_lambda_targets
from dppo.algos.rwr import completed_episode_mask, reward_to_go, rwr_targets
from dppo.runners.weighted_regression import TrainWeightedRegressionAgent


# ------------------------------------------------------------------------------------------------ RWR targets
def test_reward_to_go_and_the_episodes_it_counts():
    # two envs, 5 steps. env 0: reset at 0, episode ends at step 2 (firsts[3]), a new one runs to the end.
    # env 1: continues an episode from before the rollout (firsts[0] = 0), ends at step 1, then a one-step
    # episode (steps 2, ended at 2) that is not counted, then steps 3-4 end at 4 (counted).
    firsts = np.array([[1, 0], [0, 0], [0, 1], [1, 1], [0, 0], [0, 1]], np.float32)
    rewards = np.array([[1, 5], [2, 6], [3, 7], [4, 8], [5, 9]], np.float32)
    g = reward_to_go(rewards, firsts, 0.5).numpy()
    # env 0: episode [0,2]: G2 = 3, G1 = 2 + 1.5 = 3.5, G0 = 1 + 1.75 = 2.75; then [3,4] unfinished: G4 = 5, G3 = 6.5
    np.testing.assert_allclose(g[:, 0], [2.75, 3.5, 3.0, 6.5, 5.0])
    # env 1: ends after step 1 (G1 = 6, G0 = 5 + 3), step 2 alone (7), [3, 4]: G4 = 9, G3 = 8 + 4.5
    np.testing.assert_allclose(g[:, 1], [8.0, 6.0, 7.0, 12.5, 9.0])
    mask = completed_episode_mask(firsts).numpy()
    np.testing.assert_array_equal(mask[:, 0], [True, True, True, False, False])
    np.testing.assert_array_equal(mask[:, 1], [False, False, False, True, True])


def test_rwr_weights_are_normalised_exponentiated_and_clipped():
    firsts = np.array([[1], [0], [0], [1]], np.float32)  # one episode of 3 steps
    rewards = np.array([[0.0], [0.0], [1.0]], np.float32)
    gamma, beta = 1.0, 2.0
    mask, g, w = (x.numpy()[:, 0] for x in rwr_targets(rewards, firsts, gamma, beta, max_weight=3.0))
    assert mask.all()
    np.testing.assert_allclose(g, [1.0, 1.0, 1.0])  # undiscounted reward-to-go
    np.testing.assert_allclose(w, [1.0, 1.0, 1.0])  # all equal: G~ = 0, w = exp(0)
    rewards = np.array([[1.0], [0.0], [2.0]], np.float32)
    mask, g, w = (x.numpy()[:, 0] for x in rwr_targets(rewards, firsts, 0.5, beta, max_weight=3.0))
    np.testing.assert_allclose(g, [1.5, 1.0, 2.0])
    mean, std = g.mean(), g.std()  # population std, as numpy's (the reference's)
    expected = np.minimum(np.exp(beta * (g - mean) / (std + 1e-3)), 3.0)
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    assert w[2] == pytest.approx(3.0) and w[1] < 1.0  # the best step is clipped at max_weight
    # steps outside a completed episode get weight 0
    firsts2 = np.array([[1], [0], [0], [0]], np.float32)
    mask, _, w = (x.numpy()[:, 0] for x in rwr_targets(rewards, firsts2, 0.5, beta, 3.0))
    assert not mask.any() and (w == 0).all()


# ------------------------------------------------------------------------------------------------ AWR targets
def test_td_lambda_targets_by_hand_with_a_termination():
    # one env, 3 buffer entries; the episode terminates at entry 1. gamma = 0.9, lambda = 0.5, alpha = 0.5
    r = np.array([[1.0], [2.0], [3.0]], np.float32)
    term = np.array([[0.0], [1.0], [0.0]], np.float32)
    v = np.array([[0.5], [1.0], [2.0]], np.float32)
    got = td_lambda_targets(r, term, v, gamma=0.9, lam=0.5, alpha=0.5).numpy()[:, 0]
    # entry 2 (newest): next value := its own, 2.0: e2 = 3 + 0.9*2 - 2 = 2.8, v2 = 0.5*2.8 = 1.4, target 3.4
    # entry 1 (terminated): e1 = 2 + 0 - 1 = 1, v1 = 0.5*1 + 0 (cut) = 0.5, target 1.5
    # entry 0: e0 = 1 + 0.9*1.0 - 0.5 = 1.4, v0 = 0.5*1.4 + 0.9*0.5*0.5 = 0.925, target 1.425
    np.testing.assert_allclose(got, [1.425, 1.5, 3.4], rtol=1e-6)
    # a terminated newest entry does not bootstrap: e = 3 - 2 = 1, v = 0.5, target 2.5
    term2 = np.array([[0.0], [0.0], [1.0]], np.float32)
    assert td_lambda_targets(r, term2, v, 0.9, 0.5, 0.5).numpy()[2, 0] == pytest.approx(2.5)


def test_advantage_normalisation_and_weight_clipping():
    a = tf.constant([1.0, 2.0, 3.0, 10.0])
    z = (np.array([1, 2, 3, 10.0]) - 4.0) / (np.std([1, 2, 3, 10.0], ddof=1) + 1e-6)  # unbiased std, as torch
    w = advantage_weights(a, beta=1.0, max_weight=2.0).numpy()
    np.testing.assert_allclose(w, np.minimum(np.exp(z), 2.0), rtol=1e-5)
    assert w[3] == pytest.approx(2.0) and (w[:3] < 1.0).all()
    # shift- and scale-free within the minibatch
    np.testing.assert_allclose(advantage_weights(a * 5 + 7, 1.0, 2.0).numpy(), w, rtol=1e-4)


def test_fixed_critic_loss_differs_from_the_reference_broadcast():
    v = tf.Variable([1.0, 2.0, 3.0])
    y = tf.constant([2.0, 2.0, 5.0])
    # fixed: ((1-2)^2 + (2-2)^2 + (3-5)^2) / 3 = 5/3
    # reference: mean over all 9 pairs (V_i - y_j)^2 = (1+1+16 + 0+0+9 + 1+1+4) / 9 = 33/9 = 11/3
    assert float(critic_loss(v, y)) == pytest.approx(5 / 3)
    assert float(critic_loss(v, y, reference_broadcast=True)) == pytest.approx(11 / 3)
    for broadcast, expected in ((False, [-2 / 3, 0.0, -4 / 3]), (True, [-4 / 3, -2 / 3, 0.0])):
        with tf.GradientTape() as tape:
            loss = critic_loss(v, y, broadcast)
        # fixed: 2/3 (V_i - y_i); reference: 2/3 (V_i - mean(y)) with mean(y) = 3: every V pulled to the batch mean
        np.testing.assert_allclose(tape.gradient(loss, v).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_step_buffer_is_a_fifo_in_time_order():
    buf = StepBuffer(3)
    for start in (0, 2, 4):  # two steps per add, two envs
        steps = np.arange(start, start + 2, dtype=np.float32)
        buf.add({"rewards": np.stack([steps, -steps], 1)})
    np.testing.assert_array_equal(buf.ordered()["rewards"][:, 0], [3, 4, 5])
    again = StepBuffer(3)
    again.load(buf.ordered())
    again.add({"rewards": np.array([[6.0, -6.0]], np.float32)})
    np.testing.assert_array_equal(again.ordered()["rewards"][:, 0], [4, 5, 6])


# ------------------------------------------------------------------------------------------------ runner
def base_cfg(logdir, method, env_name="DppoTestBandit-v0", obs_dim=1, action_dim=2, n_envs=8, n_steps=4,
             n_itr=2, wrappers=None, **over):
    actor = {"_target_": "dppo.nets.diffusion_mlp.DiffusionMLP", "time_dim": 8, "mlp_dims": [32, 32, 32],
             "residual_style": True, "cond_dim": obs_dim, "horizon_steps": 1, "action_dim": action_dim}
    train = {"n_train_itr": n_itr, "n_critic_warmup_itr": 0, "n_steps": n_steps, "gamma": 0.99,
             "save_model_freq": 1, "val_freq": 100, "force_train": True, "beta": 10.0}
    model = {"horizon_steps": 1, "obs_dim": obs_dim, "action_dim": action_dim, "denoising_steps": 4,
             "randn_clip_value": 3, "min_sampling_denoising_std": 0.1}
    if method == "rwr":
        target = "agent.finetune.train_rwr_diffusion_agent.TrainRWRDiffusionAgent"
        train.update(lr=3e-3, max_reward_weight=100, batch_size=32, update_epochs=4)
        model.update(_target_="dppo.algos.rwr.RWRDiffusion", network=actor)
    else:
        target = "agent.finetune.train_awr_diffusion_agent.TrainAWRDiffusionAgent"
        train.update(actor_lr=3e-3, critic_lr=1e-3, max_adv_weight=100, batch_size=32, buffer_size=8,
                     replay_ratio=4, critic_update_ratio=2, scale_reward_factor=1.0)
        model.update(_target_="dppo.algos.awr.AWRDiffusion", actor=actor,
                     critic={"_target_": "dppo.nets.critics.CriticObs", "cond_dim": obs_dim, "mlp_dims": [32, 32]})
    cfg = OmegaConf.create({
        "_target_": target, "logdir": str(logdir), "seed": 3, "obs_dim": obs_dim, "action_dim": action_dim,
        "horizon_steps": 1, "act_steps": 1, "cond_steps": 1, "denoising_steps": 4,
        "env": {"n_envs": n_envs, "name": env_name, "max_episode_steps": 2 * n_steps, "reset_at_iteration": True,
                "best_reward_threshold_for_success": 1,
                "wrappers": wrappers or {"multi_step": {"n_obs_steps": 1, "n_action_steps": 1,
                                                        "reset_within_step": True}}},
        "train": train, "model": model})
    from dppo.run import map_targets
    map_targets(cfg)
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.mark.parametrize("method", ["rwr", "awr"])
def test_weighted_regression_raises_return_on_a_bandit(tmp_path, method):
    cfg = base_cfg(tmp_path / method, method, n_envs=16, n_steps=8, n_itr=10)
    agent = TrainWeightedRegressionAgent(cfg)
    history = agent.run()
    first = np.mean([h["train/avg_episode_reward"] for h in history[:2]])
    last = np.mean([h["train/avg_episode_reward"] for h in history[-2:]])
    assert last > first + 0.3, (first, last)
    assert np.isfinite(history[-1]["loss/loss"]) and history[-1]["env_steps"] == 10 * 16 * 8
    if method == "awr":
        assert history[-1]["loss/buffer_steps"] == 8 and np.isfinite(history[-1]["loss/critic_loss"])
        assert "critic" in agent.learner.learning_rates()
    # the run's policy file and its checkpoint hold the fine-tuned network (the group evaluation reads)
    from dppo.policy import load_policy
    from dppo.utils.checkpoint import groups_in, load_checkpoint

    state = load_checkpoint(tmp_path / method / "checkpoint" / "state_9.npz")
    assert "model" in groups_in(state) and ("critic" in groups_in(state)) == (method == "awr")
    policy = load_policy(tmp_path / method / "policy.npz")
    for a, b in zip(policy.model.network.weights, agent.model.network.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("method", ["rwr", "awr"])
def test_resume_continues_exactly(tmp_path, method, avoid_norm):
    wrappers = {"d3il_lowdim": {"normalization_path": avoid_norm},
                "multi_step": {"n_obs_steps": 1, "n_action_steps": 1, "max_episode_steps": 6}}
    over = {"normalization_path": avoid_norm, "env.max_episode_steps": 6}

    def cfg(name, n_itr):
        c = base_cfg(tmp_path / name, method, "avoiding-m5", 4, 2, n_envs=4, n_steps=6, n_itr=n_itr,
                     wrappers=wrappers, **over)
        c.train.val_freq, c.train.force_train = 2, False  # evaluation iterations 0 and 2
        if method == "awr":
            c.train.n_critic_warmup_itr = 2  # actor from iteration 3 on (after the resume)
        return c

    full = TrainWeightedRegressionAgent(cfg("a", 4)).run()
    TrainWeightedRegressionAgent(cfg("b", 2)).run()
    resumed_cfg = cfg("b", 4)
    resumed_cfg.resume = True
    resumed = TrainWeightedRegressionAgent(resumed_cfg)
    assert resumed.itr == 2
    if method == "awr":
        assert len(resumed.learner.buffer) == 6  # iteration 1's steps (iteration 0 evaluated)
        assert [p.name for p in (tmp_path / "b" / "checkpoint").glob("buffer_*.npz")] == ["buffer_1.npz"]
    again = resumed.run()
    assert [h["itr"] for h in again] == [2, 3]
    for got, want in zip(again, full[2:]):
        for key, value in want.items():
            if not key.startswith("time/"):
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7, nan_ok=True), key
    assert "eval/avg_episode_reward" in full[2] and "train/avg_episode_reward" in full[3]
    assert len((tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()) == 5

