"""Models, configs and synthetic files the benchmark cases share (nothing here is timed)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent.parent
HOPPER_CFG = ROOT / "cfg/gym/finetune/hopper-v2/ft_ppo_diffusion_mlp.yaml"
AVOID_M2_CFG = ROOT / "cfg/d3il/finetune/avoid_m2/ft_ppo_diffusion_mlp.yaml"

_TMP = Path(tempfile.mkdtemp(prefix="dppo-bench-"))


def tmp_dir(name: str) -> Path:
    path = _TMP / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------------------
def diffusion_mlp(obs_dim: int = 11, action_dim: int = 3, horizon_steps: int = 4):
    """The reference's gym actor: DiffusionMLP [512, 512, 512], residual, ReLU, time_dim 16."""
    from dppo.nets.diffusion_mlp import DiffusionMLP
    return DiffusionMLP(action_dim, horizon_steps, obs_dim, time_dim=16, mlp_dims=[512, 512, 512],
                        activation_type="ReLU", residual_style=True)


def ppo_diffusion(obs_dim: int = 11, action_dim: int = 3, horizon_steps: int = 4, denoising_steps: int = 20,
                  ft_denoising_steps: int = 10, use_ddim: bool = False, ddim_steps: int | None = None,
                  seed: int = 0, jit_compile_sampler: bool = False):
    """PPODiffusion with the gym hopper config's networks and PPO settings, and AdamW optimisers."""
    from dppo.algos.ppo_diffusion import PPODiffusion
    from dppo.nets.critics import CriticObs
    model = PPODiffusion(
        actor=diffusion_mlp(obs_dim, action_dim, horizon_steps),
        actor_ft=diffusion_mlp(obs_dim, action_dim, horizon_steps),
        critic=CriticObs(obs_dim, [256, 256, 256], activation_type="Mish", residual_style=True),
        ft_denoising_steps=ft_denoising_steps, horizon_steps=horizon_steps, obs_dim=obs_dim, action_dim=action_dim,
        denoising_steps=denoising_steps, use_ddim=use_ddim, ddim_steps=ddim_steps, gamma_denoising=0.99,
        clip_ploss_coef=0.01, clip_ploss_coef_base=0.01, clip_ploss_coef_rate=3.0, randn_clip_value=3.0,
        min_sampling_denoising_std=0.1, min_logprob_denoising_std=0.1, seed=seed,
        jit_compile_sampler=jit_compile_sampler)
    return model


def ppo_learner(model, seed: int = 0, micro_batch: int | None = None):
    """The PPO learner of a policy, with the gym configs' learning rates (``micro_batch``: train.micro_batch)."""
    from dppo.algos.ppo import PPOLearner
    from dppo.utils.optim import AdamW
    return PPOLearner(model, AdamW(model.trainable_actor_variables(), 1e-4),
                      AdamW(model.critic.trainable_variables, 1e-3), seed, micro_batch=micro_batch)


def matmul_flops_per_row(layer) -> int:
    """Forward matmul FLOPs per input row: 2 * in * out summed over the layer's 2-D weights (Dense kernels)."""
    return int(sum(2 * int(np.prod(w.shape)) for w in layer.trainable_variables if len(w.shape) == 2))


# ---------------------------------------------------------------------------------------------------------
def hopper_normalization() -> str:
    """A synthetic normalization.npz for Hopper (obs 11 in [-10, 10], actions in [-1, 1])."""
    from dppo.data.normalization import Normalization
    path = tmp_dir("hopper") / "normalization.npz"
    if not path.exists():
        Normalization(np.full(11, -10.0, np.float32), np.full(11, 10.0, np.float32),
                      -np.ones(3, np.float32), np.ones(3, np.float32)).save(path)
    return str(path)


def locomotion_normalization(robot: str, obs_dim: int, action_dim: int) -> str:
    """A synthetic normalization.npz for a locomotion robot (obs in [-10, 10], actions in [-1, 1])."""
    if robot == "hopper":
        return hopper_normalization()
    from dppo.data.normalization import Normalization
    path = tmp_dir(robot) / "normalization.npz"
    if not path.exists():
        Normalization(np.full(obs_dim, -10.0, np.float32), np.full(obs_dim, 10.0, np.float32),
                      -np.ones(action_dim, np.float32), np.ones(action_dim, np.float32)).save(path)
    return str(path)


def avoid_normalization() -> str:
    """Avoid's normalisation ranges (as the tests and the generated M2 data have them)."""
    from dppo.data.normalization import Normalization
    path = tmp_dir("avoid") / "normalization.npz"
    if not path.exists():
        Normalization(np.array([0, -0.27974, 0, -0.28194], np.float32),
                      np.array([0.6033, 0.47532, 0.60578, 0.47726], np.float32),
                      np.array([-0.0125, 0], np.float32), np.array([0.0125, 0.0125], np.float32)).save(path)
    return str(path)


def hopper_wrappers(norm: str, act_steps: int = 4) -> dict[str, Any]:
    return {"mujoco_locomotion_lowdim": {"normalization_path": norm},
            "multi_step": {"n_obs_steps": 1, "n_action_steps": act_steps, "max_episode_steps": 1000,
                           "reset_within_step": True}}


def _register_resolvers() -> None:
    from dppo.run import register_resolvers
    register_resolvers()
    if not OmegaConf.has_resolver("now"):
        OmegaConf.register_new_resolver("now", lambda fmt: "bench")


def _finish(cfg: DictConfig, logdir: Path, **over: Any) -> DictConfig:
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for key in ("hydra", "defaults"):
        cfg.pop(key, None)
    cfg.base_policy_path = None
    cfg.model.network_path = None
    cfg.logdir = str(logdir)
    cfg.wandb = None
    for key, value in over.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def hopper_cfg(name: str, **over: Any) -> DictConfig:
    """The repo's hopper fine-tuning config, no checkpoint,
    synthetic normalisation, logs to a temp dir; ``over`` are dotted overrides (``env.n_envs=10``)."""
    _register_resolvers()
    cfg = OmegaConf.load(HOPPER_CFG)
    cfg.normalization_path = hopper_normalization()
    return _finish(cfg, tmp_dir(name), **over)


def avoid_m2_cfg(name: str, **over: Any) -> DictConfig:
    """The demo's Avoid M2 fine-tuning config, no checkpoint, the Avoid normalisation, logs to a temp dir."""
    _register_resolvers()
    cfg = OmegaConf.load(AVOID_M2_CFG)
    cfg.normalization_path = avoid_normalization()
    return _finish(cfg, tmp_dir(name), **over)


def random_batch(learner, n: int, seed: int = 0, logprob_batch: int = 10000):
    """An update batch (``PPOBatch``) of ``n`` env steps: random states/chains/advantages, old values and
    log-probs from the learner (in chunks of ``logprob_batch`` env steps, like the runner)."""
    from dppo.algos.ppo import PPOBatch
    model = learner.policy
    rng = np.random.default_rng(seed)
    kp = model.ft_denoising_steps
    state = rng.standard_normal((n, model.cond_steps, model.obs_dim)).astype(np.float32)
    chains = np.clip(rng.standard_normal((n, kp + 1, model.horizon_steps, model.action_dim)), -1, 1)
    chains = chains.astype(np.float32)
    values, log_probs = [], []
    for s in range(0, n, logprob_batch):
        v, lp = learner.score({"state": tf.constant(state[s:s + logprob_batch])},
                              tf.constant(chains[s:s + logprob_batch]))
        values.append(v.numpy())
        log_probs.append(lp.numpy())
    return PPOBatch({"state": tf.constant(state)}, tf.constant(chains),
                    tf.constant(rng.standard_normal(n).astype(np.float32)), tf.constant(np.concatenate(values)),
                    tf.constant(rng.standard_normal(n).astype(np.float32)), tf.constant(np.concatenate(log_probs)))
