"""Learning check of the replay-based baselines (DIPO, DQL, QSM, IDQL) on a two-step bandit.

A diffusion policy is pre-trained (in this script, a few seconds) on demonstrations around a = 0 in both action
dims; the bandit pays 1 - sum |a - 0.6| per step (2 steps per episode), so the pre-trained policy earns about
2 * (1 - 1.2) = -0.4 per episode and the best policy 2. Each method then fine-tunes it with the shipped runner
(``TrainReplayDiffusionAgent``) and the script prints the deterministic return before and after.

    PYTHONPATH=. python script/replay_baselines_bandit.py [--methods dipo dql qsm idql] [--itr 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from dppo.envs.bandit import TwoStepBandit
from dppo.run import register_resolvers
from dppo.runners.replay_diffusion import TrainReplayDiffusionAgent
from dppo.utils.checkpoint import save_checkpoint

gym.register("DppoBanditCheck-v0", entry_point=TwoStepBandit)

METHODS = {
    "dipo": ("dppo.algos.dipo.DIPODiffusion", {"target_ema_rate": 0.05, "action_lr": 0.01,
                                               "action_gradient_steps": 10}),
    "dql": ("dppo.algos.dql.DQLDiffusion", {"target_ema_rate": 0.05, "eta": 1.0}),
    "qsm": ("dppo.algos.qsm.QSMDiffusion", {"critic_tau": 0.05, "q_grad_coeff": 10}),
    "idql": ("dppo.algos.idql.IDQLDiffusion", {"critic_tau": 0.05, "eval_sample_num": 16, "eval_deterministic": True,
                                               "use_expectile_exploration": True}),
}


def config(logdir: Path, method: str, n_itr: int, base: str) -> OmegaConf:
    target, train = METHODS[method]
    critic = {"_target_": "dppo.nets.critics.CriticObsAct", "cond_dim": 1, "action_dim": 2, "action_steps": 1,
              "mlp_dims": [64, 64], "activation_type": "Mish"}
    model = {"_target_": target, "min_sampling_denoising_std": 0.1, "randn_clip_value": 3, "network_path": base,
             "actor": {"_target_": "dppo.nets.diffusion_mlp.DiffusionMLP", "time_dim": 8, "mlp_dims": [64, 64, 64],
                       "residual_style": True, "cond_dim": 1, "horizon_steps": 1, "action_dim": 2},
             "horizon_steps": 1, "obs_dim": 1, "action_dim": 2, "denoising_steps": 10}
    if method == "idql":
        model.update(critic_q=critic, critic_v={"_target_": "dppo.nets.critics.CriticObs", "cond_dim": 1,
                                                "mlp_dims": [64, 64]})
    else:
        model["critic"] = critic
    return OmegaConf.create({
        "_target_": "dppo.runners.replay_diffusion.TrainReplayDiffusionAgent", "logdir": str(logdir), "seed": 0,
        "obs_dim": 1, "action_dim": 2, "horizon_steps": 1, "act_steps": 1, "cond_steps": 1, "denoising_steps": 10,
        "env": {"n_envs": 16, "name": "DppoBanditCheck-v0", "max_episode_steps": 10, "reset_at_iteration": True,
                "best_reward_threshold_for_success": 1,
                "wrappers": {"multi_step": {"n_obs_steps": 1, "n_action_steps": 1, "max_episode_steps": 10,
                                            "reset_within_step": True}}},
        "train": {"n_train_itr": n_itr, "n_critic_warmup_itr": 2, "n_steps": 4, "gamma": 0.9, "actor_lr": 1e-3,
                  "critic_lr": 1e-3, "save_model_freq": 1000, "val_freq": 5, "batch_size": 64, "replay_ratio": 8,
                  "buffer_size": 5000, "scale_reward_factor": 1.0, **train},
        "model": model, "wandb": None})


def pretrain(path: Path, steps: int = 1500) -> str:
    """A diffusion policy cloned on actions N(0, 0.05^2) in both dims (saved as a pre-training checkpoint)."""
    from dppo.nets.diffusion_mlp import DiffusionMLP
    from dppo.policies.diffusion import DiffusionModel

    net = DiffusionMLP(2, 1, 1, time_dim=8, mlp_dims=[64, 64, 64], residual_style=True)
    model = DiffusionModel(net, horizon_steps=1, obs_dim=1, action_dim=2, denoising_steps=10, seed=0)
    opt = tf.keras.optimizers.Adam(1e-3)
    rng = np.random.default_rng(0)

    @tf.function
    def step(x, s):
        with tf.GradientTape() as tape:
            loss = model.loss(x, {"state": s})
        opt.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))
        return loss

    for _ in range(steps):
        s = rng.integers(0, 2, (256, 1, 1)).astype(np.float32)
        step(tf.constant(0.05 * rng.standard_normal((256, 1, 2)), tf.float32), tf.constant(s))
    return str(save_checkpoint(path, {"ema": net.weights}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--itr", type=int, default=31)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    register_resolvers()
    out = Path(args.out or tempfile.mkdtemp(prefix="replay_bandit_"))
    base = pretrain(out / "pretrained.npz")
    for method in args.methods:
        history = TrainReplayDiffusionAgent(config(out / method, method, args.itr, base)).run()
        evals = [(h["itr"], h["eval/avg_episode_reward"]) for h in history if "eval/avg_episode_reward" in h]
        first, last = evals[0][1], evals[-1][1]
        print(f"{method}: deterministic return {first:.3f} (pre-trained, itr 0) -> {last:.3f} (itr {evals[-1][0]}); "
              f"all evals {[round(r, 3) for _, r in evals]}  {'IMPROVED' if last > first + 0.2 else 'NOT IMPROVED'}")


if __name__ == "__main__":
    main()
