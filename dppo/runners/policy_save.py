"""What a runner writes beside its checkpoints: ``<logdir>/policy.npz``, the stand-alone policy file
(:mod:`dppo.utils.policy_file`) of its latest checkpoint - config, normalisation and weights in one file, loaded
by ``dppo.load_policy``. The checkpoints themselves are unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from dppo.data.normalization import KEYS as NORM_KEYS
from dppo.data.normalization import Normalization
from dppo.policies.diffusion import DiffusionModel
from dppo.policies.gaussian import GaussianModel
from dppo.policies.gmm import GMMModel
from dppo.utils.policy_file import write_policy_file
from dppo.utils.validate import accepted_kwargs

POLICY_FILE = "policy.npz"
BASES = {"diffusion": DiffusionModel, "gaussian": GaussianModel, "gmm": GMMModel}
NOT_SPEC = {"self", "network", "network_path", "seed", "device", "name", "kwargs"}


def policy_kind(model: Any) -> str:
    for kind, base in BASES.items():
        if isinstance(model, base):
            return kind
    raise TypeError(f"{type(model).__name__} is not a diffusion, Gaussian or GMM policy")


def clamp_obs(cfg: DictConfig) -> bool:
    """Whether the run's env wrappers clamp normalised observations to [-1, 1] (pre-training configs name the env
    with a string and have no wrappers: no)."""
    env = cfg.get("env")
    wrappers = (env.get("wrappers") if isinstance(env, DictConfig) else None) or {}
    return any(bool(w.get("clamp_obs", False)) for w in wrappers.values() if isinstance(w, DictConfig))


def policy_spec(cfg: DictConfig, model: Any, network_cfg: DictConfig) -> dict[str, Any]:
    """The constructor arguments of the sampling policy (the model block's keys its base class takes, and the
    dims the model ended up with), the network config, and how observations are fed."""
    kind = policy_kind(model)
    accepted = accepted_kwargs(BASES[kind]) - NOT_SPEC
    block = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs = {k: v for k, v in block.items() if k in accepted}
    kwargs.update({k: int(getattr(model, k)) for k in ("horizon_steps", "obs_dim", "action_dim", "cond_steps")})
    return {"kwargs": kwargs, "network": OmegaConf.to_container(network_cfg, resolve=True),
            "pixels": getattr(model.network, "rgb_shape", None) is not None, "clamp_obs": clamp_obs(cfg),
            "seed": int(cfg.get("seed", 0))}


def save_policy(logdir: str | Path, cfg: DictConfig, model: Any, network_cfg: DictConfig,
                network: Sequence[tf.Variable], actor_ft: Sequence[tf.Variable] | None = None) -> Path:
    """Write ``<logdir>/policy.npz``: ``network`` weights (and a DPPO policy's fine-tuned ``actor_ft``)."""
    spec = policy_spec(cfg, model, network_cfg)
    groups = {"network": network}
    if actor_ft is not None:
        groups["actor_ft"] = actor_ft
        spec["ft_denoising_steps"] = int(model.ft_denoising_steps)
    norm = None
    if cfg.get("normalization_path"):
        loaded = Normalization.load(cfg.normalization_path)
        norm = {k: getattr(loaded, k) for k in NORM_KEYS}
    return write_policy_file(Path(logdir) / POLICY_FILE, policy_kind(model), spec, groups, norm)
