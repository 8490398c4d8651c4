"""SAC: losses against NumPy on hand-made batches, the update's target/temperature steps, the replay
buffer, checkpoint/resume, and a short Pendulum run that must improve on its random start."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf

from dppo.algos.sac import SAC, tanh_gaussian_sample
from dppo.data.normalization import Normalization
from dppo.runners.off_policy import ReplayBuffer, TrainSACAgent

# ------------------------------------------------------------------------------------------ numpy reference


def f64(v):
    return v.numpy().astype(np.float64)


def np_mlp(blocks, x, act_last):
    n = len(blocks)
    x = x.astype(np.float64)
    for i, blk in enumerate(blocks):
        lin = blk[0]
        x = x @ f64(lin.kernel) + f64(lin.bias)
        if i < n - 1 or act_last:
            x = np.maximum(x, 0.0)
    return x


def np_actor(sac, obs):
    a = sac.actor
    h = np_mlp(a.base.blocks, obs.reshape(len(obs), -1), act_last=True)
    mean = h @ f64(a.mean_head.kernel) + f64(a.mean_head.bias)
    lv = np.tanh(h @ f64(a.logvar_head.kernel) + f64(a.logvar_head.bias))
    lv = a.logvar_min + 0.5 * (a.logvar_max - a.logvar_min) * (lv + 1)
    return mean, np.exp(0.5 * lv)


def np_sample(sac, obs, noise):
    mean, std = np_actor(sac, obs)
    eps = np.clip(noise, -sac.randn_clip_value, sac.randn_clip_value)
    u = mean + std * eps
    a = np.tanh(u)
    # log N(u; mean, std) written from the density, not from eps
    logn = -((u - mean) ** 2) / (2 * std**2) - np.log(std) - 0.5 * np.log(2 * np.pi)
    return a, (logn - np.log(1 - a**2 + 1e-6)).sum(-1)


def np_q(critic, obs, act):
    x = np.concatenate([obs.reshape(len(obs), -1), act.reshape(len(act), -1)], -1)
    return np_mlp(critic.q1.blocks, x, False)[:, 0], np_mlp(critic.q2.blocks, x, False)[:, 0]


def make_tiny(seed=0, target_entropy=None):
    keras.utils.set_random_seed(seed)
    sac = SAC(obs_dim=3, action_dim=2, actor_mlp_dims=(8, 8), critic_mlp_dims=(8, 8), gamma=0.9,
              target_ema_rate=0.1, init_temperature=0.5, target_entropy=target_entropy, seed=1)
    rng = np.random.default_rng(0)
    # perturb the target critic so that it differs from the critic
    for w in sac.target_critic.weights:
        w.assign(w + 0.1 * rng.standard_normal(w.shape).astype(np.float32))
    b = 6
    batch = dict(obs=rng.standard_normal((b, 1, 3)).astype(np.float32),
                 actions=rng.uniform(-1, 1, (b, 1, 2)).astype(np.float32),
                 rewards=rng.standard_normal(b).astype(np.float32),
                 next_obs=rng.standard_normal((b, 1, 3)).astype(np.float32),
                 terminated=np.array([0, 1, 0, 0, 1, 0], np.float32))
    noise = np.clip(rng.standard_normal((b, 2)), -2, 2).astype(np.float32)  # well inside tanh's range
    return sac, batch, noise


@pytest.fixture(params=[0, 1])
def tiny(request):
    return make_tiny(request.param)


def test_tanh_gaussian_logprob_matches_change_of_variables():
    mean, std = np.array([[0.3, -1.2]], np.float32), np.array([[0.5, 2.0]], np.float32)
    noise = np.array([[0.7, -0.4]], np.float32)
    a, lp = tanh_gaussian_sample(mean, std, noise)
    u = mean + std * noise
    expected = sum(-0.5 * noise[0, i] ** 2 - math.log(std[0, i]) - 0.5 * math.log(2 * math.pi)
                   - math.log(1 - math.tanh(u[0, i]) ** 2 + 1e-6) for i in range(2))
    np.testing.assert_allclose(a.numpy(), np.tanh(u), rtol=1e-6)
    np.testing.assert_allclose(lp.numpy()[0], expected, rtol=1e-5)
    # noise beyond randn_clip_value (10) is clipped, as the reference clamps samples to mean +- 10 std
    a12, lp12 = tanh_gaussian_sample(mean, std, np.array([[12.0, -0.4]], np.float32))
    a10, lp10 = tanh_gaussian_sample(mean, std, np.array([[10.0, -0.4]], np.float32))
    np.testing.assert_array_equal(a12.numpy(), a10.numpy())
    np.testing.assert_array_equal(lp12.numpy(), lp10.numpy())


def test_actor_std_range_and_shapes(tiny):
    sac, batch, _ = tiny
    for w in sac.actor.logvar_head.weights:  # drive the log-variance head to both saturations
        w.assign(100.0 * tf.ones_like(w))
    _, std = sac.actor(batch["obs"])
    np.testing.assert_allclose(std.numpy(), 7.3891, rtol=1e-4)
    for w in sac.actor.logvar_head.weights:
        w.assign(-100.0 * tf.ones_like(w))
    _, std = sac.actor(np.abs(batch["obs"]))
    np.testing.assert_allclose(std.numpy(), 0.0067, rtol=1e-4)
    assert sac.act(batch["obs"]).shape == (6, 1, 2)
    det = sac.act(batch["obs"], deterministic=True).numpy()
    np.testing.assert_allclose(det[:, 0], np.tanh(np_actor(sac, batch["obs"])[0]), rtol=1e-5, atol=1e-6)


def test_critic_loss_matches_numpy(tiny):
    sac, b, noise = tiny
    alpha = 0.5
    loss, _ = sac.critic_loss(b["obs"], b["actions"], b["rewards"], b["next_obs"], b["terminated"], alpha, noise)
    na, nlp = np_sample(sac, b["next_obs"], noise)
    tq1, tq2 = np_q(sac.target_critic, b["next_obs"], na)
    y = b["rewards"] + 0.9 * (1 - b["terminated"]) * (np.minimum(tq1, tq2) - alpha * nlp)
    q1, q2 = np_q(sac.critic, b["obs"], b["actions"])
    expected = np.mean((q1 - y) ** 2) + np.mean((q2 - y) ** 2)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-4)


def test_actor_and_temperature_losses_match_numpy(tiny):
    sac, b, noise = tiny
    alpha = 0.5
    loss, logprob = sac.actor_loss(b["obs"], alpha, noise)
    a, lp = np_sample(sac, b["obs"], noise)
    q1, q2 = np_q(sac.critic, b["obs"], a)
    np.testing.assert_allclose(logprob.numpy(), lp, rtol=1e-4)
    np.testing.assert_allclose(loss.numpy(), np.mean(alpha * lp - np.minimum(q1, q2)), rtol=1e-4)
    t_loss = sac.temperature_loss(logprob)
    np.testing.assert_allclose(t_loss.numpy(), -np.mean(0.5 * (lp + sac.target_entropy)), rtol=1e-5)
    assert make_tiny(0)[0].target_entropy == -2.0  # default -D_a * T_a


@pytest.mark.parametrize("target_entropy", [-50.0, 50.0])
def test_update_polyak_target_and_temperature_direction(target_entropy):
    sac, b, _ = make_tiny(0, target_entropy)
    target_before = [w.numpy() for w in sac.target_critic.weights]
    critic_before = [w.numpy() for w in sac.critic.weights]
    actor_before = [w.numpy() for w in sac.actor.weights]
    log_alpha = float(sac.log_alpha.numpy())
    out = sac.update(b["obs"], b["actions"], b["rewards"], b["next_obs"], b["terminated"], True, False)
    assert set(out) >= {"loss_critic", "alpha"} and "loss_actor" not in out
    for t0, c, t1 in zip(target_before, sac.critic.weights, sac.target_critic.weights):
        np.testing.assert_allclose(t1.numpy(), 0.9 * t0 + 0.1 * c.numpy(), rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(c0, c.numpy()) for c0, c in zip(critic_before, sac.critic.weights))
    for a0, a in zip(actor_before, sac.actor.weights):  # no actor step requested
        np.testing.assert_array_equal(a0, a.numpy())
    # entropy can be neither above 50 nor below -50 here: alpha must go up for +50 and down for -50
    out = sac.update(b["obs"], b["actions"], b["rewards"], b["next_obs"], b["terminated"], True, True)
    assert -50 < float(out["entropy"]) < 50
    assert (float(sac.log_alpha.numpy()) - log_alpha) * target_entropy > 0
    assert sac.alpha_optimizer.iterations.numpy() == 2  # actor_steps = 2 temperature steps
    assert sac.actor_optimizer.iterations.numpy() == 2


# ------------------------------------------------------------------------------------------ buffer


def test_replay_buffer_ring_wraps_and_samples(tmp_path):
    buf = ReplayBuffer(5, (1, 3), (1, 2))
    for i in range(7):
        buf.add(np.full((1, 1, 3), i), np.full((1, 1, 2), i), np.array([i]), np.full((1, 1, 3), i + 1),
                np.array([i % 2]))
    assert len(buf) == 5 and buf.ptr == 2
    assert sorted(buf.rewards.tolist()) == [2, 3, 4, 5, 6]  # 0 and 1 overwritten
    np.testing.assert_array_equal(buf.obs[:2, 0, 0], [5, 6])
    buf.add(np.zeros((3, 1, 3)), np.zeros((3, 1, 2)), np.array([7, 8, 9]), np.zeros((3, 1, 3)), np.zeros(3))
    assert buf.ptr == 0 and sorted(buf.rewards.tolist()) == [5, 6, 7, 8, 9]
    obs, act, rew, nxt, term = buf.sample(16, np.random.default_rng(0))
    assert obs.shape == (16, 1, 3) and act.shape == (16, 1, 2) and rew.shape == (16,) and term.shape == (16,)
    assert obs.dtype == np.float32 and set(rew.tolist()) <= {5, 6, 7, 8, 9}
    buf.save(tmp_path / "b.npz", {"itr": 3})
    other = ReplayBuffer(5, (1, 3), (1, 2))
    assert other.load(tmp_path / "b.npz") == {"itr": 3}
    assert other.ptr == buf.ptr and len(other) == 5
    np.testing.assert_array_equal(other.rewards, buf.rewards)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3, (1,), (1,)).sample(2, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ runner


def pendulum_cfg(tmp_path, n_train_itr, **train):
    norm = tmp_path / "pendulum_norm.npz"
    Normalization(np.array([-1, -1, -8], np.float32), np.array([1, 1, 8], np.float32),
                  np.array([-2], np.float32), np.array([2], np.float32)).save(norm)
    return OmegaConf.create({
        "_target_": "dppo.runners.off_policy.TrainSACAgent", "logdir": str(tmp_path / "run"), "seed": 3,
        "obs_dim": 3, "action_dim": 1, "cond_steps": 1, "horizon_steps": 1, "act_steps": 1,
        "env": {"name": "Pendulum-v1", "n_envs": 1, "max_episode_steps": 200,
                "wrappers": {"normalize": {"normalization_path": str(norm)},
                             "multi_step": {"n_obs_steps": 1, "n_action_steps": 1, "max_episode_steps": 200,
                                            "reset_within_step": True}}},
        "train": {"n_train_itr": n_train_itr, "n_steps": 1, "gamma": 0.99, "actor_lr": 3e-3, "critic_lr": 3e-3,
                  "batch_size": 64, "critic_replay_ratio": 64, "actor_replay_ratio": 32, "n_explore_steps": 400,
                  "target_ema_rate": 0.02, "scale_reward_factor": 0.1, "buffer_size": 10000,
                  "init_temperature": 0.2, "val_freq": 100000, "n_eval_episode": 4, "save_model_freq": 100000,
                  "log_freq": 200, **train},
        "model": {"actor": {"mlp_dims": [64, 64], "activation_type": "ReLU"},
                  "critic": {"mlp_dims": [64, 64], "activation_type": "ReLU"}},
    })


def test_checkpoint_resume_restores_everything(tmp_path):
    cfg = pendulum_cfg(tmp_path, 450, save_model_freq=450, n_explore_steps=420, n_eval_episode=0)
    first = TrainSACAgent(cfg)
    first.run()
    assert (tmp_path / "run" / "checkpoint" / "state_450.npz").is_file()
    assert (tmp_path / "run" / "checkpoint" / "replay_buffer.npz").is_file()
    cfg.resume = True
    cfg.train.n_train_itr = 460
    second = TrainSACAgent(cfg)
    assert second.itr == 450 and len(second.buffer) == 450 and second.env_steps == 450
    for a, b in zip(first.sac.checkpoint_groups().values(), second.sac.checkpoint_groups().values()):
        for v, w in zip(a, b):
            np.testing.assert_array_equal(v.numpy(), w.numpy())
    np.testing.assert_array_equal(first.sac.rng.state.numpy(), second.sac.rng.state.numpy())
    assert first.rng.bit_generator.state == second.rng.bit_generator.state
    second.run()
    assert second.itr == 460 and len(second.buffer) == 460
    assert second.sac.critic_optimizer.iterations.numpy() == first.sac.critic_optimizer.iterations.numpy() + 10
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert all(k in rows[0] for k in ("loss/critic", "loss/actor", "loss/alpha", "env_steps"))


def test_sac_improves_on_pendulum(tmp_path):
    agent = TrainSACAgent(pendulum_cfg(tmp_path, 2000))
    random_returns = [agent.evaluate()[0]]  # deterministic eval of the untrained policy
    result = agent.run()
    trained, _ = agent.evaluate()
    logged = (tmp_path / "run" / "metrics.csv").read_text()
    assert "train/avg_episode_reward" in logged
    # random/untrained policies score about -1200 to -1500; a policy that swings up scores above -400
    assert trained > max(random_returns) + 300, (random_returns, trained, result)
