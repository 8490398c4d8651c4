"""The on-policy runner end to end: exact resume, evaluation of fine-tuned weights, and learning on a toy task."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from dppo.runners.evaluate import EvalDiffusionAgent
from dppo.runners.ppo import TrainPPODiffusionAgent


def ppo_cfg(logdir, env_name, obs_dim, action_dim, wrappers, n_envs=4, n_steps=5, n_itr=2, **over):
    cfg = {
        "_target_": "dppo.runners.ppo.TrainPPODiffusionAgent", "logdir": str(logdir), "seed": 3,
        "obs_dim": obs_dim, "action_dim": action_dim, "horizon_steps": 2, "act_steps": 2, "cond_steps": 1,
        "denoising_steps": 4, "ft_denoising_steps": 4,
        "env": {"n_envs": n_envs, "name": env_name, "max_episode_steps": 2 * n_steps, "reset_at_iteration": True,
                "best_reward_threshold_for_success": 1, "wrappers": wrappers},
        "train": {"n_train_itr": n_itr, "n_critic_warmup_itr": 0, "n_steps": n_steps, "gamma": 0.99,
                  "actor_lr": 1e-3, "critic_lr": 1e-3, "save_model_freq": 1, "val_freq": 100, "force_train": True,
                  "reward_scale_running": True, "gae_lambda": 0.95, "batch_size": 16, "update_epochs": 2,
                  "vf_coef": 0.5, "target_kl": 1.0},
        "model": {"_target_": "dppo.algos.ppo_diffusion.PPODiffusion", "gamma_denoising": 0.9,
                  "clip_ploss_coef": 0.1, "clip_ploss_coef_base": 0.1, "clip_ploss_coef_rate": 1,
                  "randn_clip_value": 3, "min_sampling_denoising_std": 0.1, "min_logprob_denoising_std": 0.1,
                  "actor": {"_target_": "dppo.nets.diffusion_mlp.DiffusionMLP", "time_dim": 8,
                            "mlp_dims": [32, 32, 32], "residual_style": True, "cond_dim": obs_dim,
                            "horizon_steps": 2, "action_dim": action_dim},
                  "critic": {"_target_": "dppo.nets.critics.CriticObs", "cond_dim": obs_dim, "mlp_dims": [32, 32]},
                  "ft_denoising_steps": 4, "horizon_steps": 2, "obs_dim": obs_dim, "action_dim": action_dim,
                  "denoising_steps": 4},
    }
    out = OmegaConf.create(cfg)
    for key, value in over.items():
        OmegaConf.update(out, key, value)
    return out


def avoid_cfg(logdir, norm, **over):
    wrappers = {"d3il_lowdim": {"normalization_path": norm},
                "multi_step": {"n_obs_steps": 1, "n_action_steps": 2, "max_episode_steps": 10,
                               "pass_full_observations": True}}
    cfg = ppo_cfg(logdir, "avoiding-m5", 4, 2, wrappers, **over)
    cfg.normalization_path = norm
    cfg.env.save_full_observations = True
    return cfg


def avoid_plotter(norm):
    return {"_target_": "dppo.viz.trajectories.TrajPlotter", "env_type": "avoid", "normalization_path": norm}


def test_resume_reproduces_the_next_iteration_exactly(tmp_path, avoid_norm):
    # render asked for, but no train.plotter: no trajectory figure
    full = TrainPPODiffusionAgent(avoid_cfg(tmp_path / "a", avoid_norm, **{"train.n_train_itr": 2,
                                                                          "train.render": {"freq": 1, "num": 2}}))
    history = full.run()
    assert full.plotter is None and not (tmp_path / "a" / "render").exists()
    # a second run stops after iteration 0, then resumes from its checkpoint and runs iteration 1
    cfg = avoid_cfg(tmp_path / "b", avoid_norm, **{"train.n_train_itr": 1})
    TrainPPODiffusionAgent(cfg).run()
    cfg.train.n_train_itr = 2
    cfg.resume = True
    resumed = TrainPPODiffusionAgent(cfg)
    assert resumed.itr == 1
    again = resumed.run()
    for key in ("train/avg_episode_reward", "loss/pg_loss", "loss/v_loss", "loss/approx_kl"):
        assert again[-1][key] == pytest.approx(history[1][key], rel=1e-5, abs=1e-7), key
    assert len((tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()) == 3


def test_eval_uses_the_fine_tuned_weights(tmp_path, avoid_norm):
    agent = TrainPPODiffusionAgent(avoid_cfg(tmp_path / "ft", avoid_norm, **{
        "train.n_train_itr": 1, "train.render": {"freq": 1, "num": 2}, "train.plotter": avoid_plotter(avoid_norm)}))
    agent.run()
    assert (tmp_path / "ft" / "render" / "traj-0.png").stat().st_size > 0  # train.plotter, every render.freq
    cfg = avoid_cfg(tmp_path / "ev", avoid_norm)
    eval_cfg = OmegaConf.create({
        "logdir": str(tmp_path / "ev"), "seed": 0, "n_steps": 5, "act_steps": 2, "render_num": 2,
        "normalization_path": avoid_norm, "env": cfg.env, "plotter": avoid_plotter(avoid_norm),
        "base_policy_path": str(tmp_path / "ft" / "checkpoint" / "state_0.npz"),
        "model": {"_target_": "dppo.policies.diffusion.DiffusionModel", "network": cfg.model.actor,
                  "horizon_steps": 2, "obs_dim": 4, "action_dim": 2, "denoising_steps": 4}})
    ev = EvalDiffusionAgent(eval_cfg)
    assert ev.weights == "fine-tuned" and ev.model.actor_ft is not None and ev.model.ft_denoising_steps == 4
    for a, b in zip(ev.model.actor_ft.weights, agent.model.actor_ft.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the run's stand-alone policy file: frozen network + fine-tuned last K' steps, raw units, as the checkpoint
    from dppo.policy import load_policy

    policy = load_policy(tmp_path / "ft" / "policy.npz")
    old = load_policy(tmp_path / "ft" / "checkpoint" / "state_0.npz")
    assert policy.model.actor_ft is not None and policy.model.ft_denoising_steps == 4
    obs = np.full((3, 1, 4), 0.2, np.float32)
    np.testing.assert_allclose(policy.act(obs, seed=2), old.act(obs, seed=2), atol=1e-6)
    result = ev.run()
    assert result["num_episode"] == 4 and (tmp_path / "ev" / "result.npz").is_file()
    # the Avoid task's registered path summary (row-3 gap frequencies sum to 1)
    assert sum(result[k] for k in ("mode5", "mode6", "mode7", "mode8", "mode_none")) == pytest.approx(1.0)
    assert (tmp_path / "ev" / "render" / "traj-eval.png").stat().st_size > 0


def test_fine_tuning_raises_return_on_a_bandit(tmp_path):
    cfg = ppo_cfg(tmp_path / "bandit", "DppoTestBandit-v0", 1, 2,
                  {"multi_step": {"n_obs_steps": 1, "n_action_steps": 1, "reset_within_step": True}},
                  n_envs=16, n_steps=8, n_itr=12,
                  **{"act_steps": 1, "train.actor_lr": 3e-3, "train.batch_size": 128, "train.update_epochs": 4,
                     "train.reward_scale_running": False, "model.clip_ploss_coef": 0.2,
                     "model.clip_ploss_coef_base": 0.2})
    history = TrainPPODiffusionAgent(cfg).run()
    first = np.mean([h["train/avg_episode_reward"] for h in history[:2]])
    last = np.mean([h["train/avg_episode_reward"] for h in history[-2:]])
    assert last > first + 0.5, (first, last)


def test_train_micro_batch_reaches_the_learner_and_changes_no_numbers(tmp_path, avoid_norm):
    """train.micro_batch 5: the 16-env-step minibatches go in chunks of 5, 5, 5 and 1, with the same losses."""
    runs = {}
    for name, micro in (("whole", None), ("micro", 5)):
        agent = TrainPPODiffusionAgent(avoid_cfg(tmp_path / name, avoid_norm, **{"train.n_train_itr": 1,
                                                                                  "train.micro_batch": micro}))
        assert agent.learner.micro_batch == (micro or 0)
        runs[name] = agent.run()[-1]
    for key in ("loss/pg_loss", "loss/v_loss", "loss/approx_kl", "loss/clipfrac"):
        assert runs["micro"][key] == pytest.approx(runs["whole"][key], rel=1e-4, abs=1e-7), key
