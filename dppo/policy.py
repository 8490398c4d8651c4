"""Trained policies that stand alone: ``dppo.load_policy(path)`` returns a :class:`Policy` mapping raw
observations to raw actions.

``path`` is a policy file (``<run>/policy.npz``, written by every pre-training and fine-tuning run beside its
checkpoints; format in :mod:`dppo.utils.policy_file`), a run directory (its ``policy.npz``, or for runs written
before policy files its ``config.yaml`` and latest checkpoint) or an old-style checkpoint ``<run>/checkpoint/
state_<n>.npz`` (with the run's ``config.yaml``). ``python -m dppo.policy <run dir | state_n.npz>`` converts an
old run into a policy file.

Normalisation and the sampling graph live in one ``tf.Module`` (:class:`RawPolicy`), which ``Policy.act`` calls
eagerly and ``dppo export`` saves: the same seed gives the same action in both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from dppo.data.normalization import EPS, Normalization
from dppo.policies.diffusion import DiffusionModel
from dppo.policies.gaussian import GaussianModel
from dppo.policies.gmm import GMMModel
from dppo.runners.evaluate import load_for_eval
from dppo.runners.policy_save import POLICY_FILE, clamp_obs, policy_kind, save_policy
from dppo.utils.checkpoint import CheckpointError, latest_checkpoint
from dppo.utils.policy_file import PolicyFile, assign_weights, is_policy_file, read_policy_file
from dppo.utils.validate import accepted_kwargs

CLASSES = {"diffusion": DiffusionModel, "gaussian": GaussianModel, "gmm": GMMModel}


class RawPolicy(tf.Module):
    """A sampling model with its normalisation: raw observation (and rgb) in, raw action chunk out."""

    def __init__(self, model: Any, normalization: dict[str, np.ndarray] | None = None, clamp: bool = False):
        super().__init__(name="raw_policy")
        self.model = model
        self.clamp = bool(clamp)
        self.normalized = normalization is not None
        norm = normalization or {}
        self.norm = {k: tf.constant(np.asarray(v, np.float32)) for k, v in norm.items()}
        self.pixels = getattr(model.network, "rgb_shape", None) is not None

    def act(self, observation: tf.Tensor, rgb: tf.Tensor | None = None, seed: tf.Tensor | None = None,
            deterministic: bool = True) -> tf.Tensor:
        """observation (B, cond_steps, obs_dim), raw -> action chunk (B, horizon_steps, action_dim), raw.
        With ``seed`` (int64 scalar) the model's noise stream restarts at Philox key ``seed``, counter 0."""
        state = tf.cast(observation, tf.float32)
        if self.normalized:
            lo, hi = self.norm["obs_min"], self.norm["obs_max"]
            state = 2.0 * ((state - lo) / (hi - lo + EPS) - 0.5)
            if self.clamp:
                state = tf.clip_by_value(state, -1.0, 1.0)
        cond = {"state": state}
        if rgb is not None:
            cond["rgb"] = tf.cast(rgb, tf.float32)
        if seed is not None:
            seed = tf.cast(tf.reshape(seed, ()), tf.int64)
            self.model.rng.reset(tf.stack([tf.constant(0, tf.int64), tf.constant(0, tf.int64), seed]))
        action = self.model.sample(cond, deterministic=deterministic)
        if self.normalized:
            lo, hi = self.norm["action_min"], self.norm["action_max"]
            action = (action + 1.0) / 2.0 * (hi - lo) + lo
        return action


class Policy:
    """A trained policy: ``act(obs_raw) -> actions_raw``; ``model`` is the sampling model (normalised units)."""

    def __init__(self, model: Any, normalization: dict[str, np.ndarray] | None = None, clamp: bool = False,
                 kind: str | None = None, source: str | Path | None = None):
        self.raw = RawPolicy(model, normalization, clamp)
        self.model = model
        self.normalization = normalization
        self.kind = kind or policy_kind(model)
        self.source = source
        self.obs_dim, self.action_dim = int(model.obs_dim), int(model.action_dim)
        self.horizon_steps, self.cond_steps = int(model.horizon_steps), int(model.cond_steps)

    @property
    def pixels(self) -> bool:
        return self.raw.pixels

    def act(self, obs: np.ndarray | dict[str, np.ndarray], deterministic: bool = True,
            seed: int | None = None) -> np.ndarray:
        """Raw observations (B, cond_steps, obs_dim) - or {"state": ..., "rgb": (B, T_img, C, H, W)} for a pixel
        policy - to raw actions (B, horizon_steps, action_dim). ``seed`` makes the draw reproducible (and equal to
        the exported SavedModel's ``seeded`` signature for the same seed)."""
        state, rgb = (obs.get("state"), obs.get("rgb")) if isinstance(obs, dict) else (obs, None)
        state = np.asarray(state, np.float32)
        if state.ndim != 3 or state.shape[1:] != (self.cond_steps, self.obs_dim):
            raise ValueError(f"observations must be (B, {self.cond_steps}, {self.obs_dim}), got {state.shape}")
        if self.pixels and rgb is None:
            raise ValueError("a pixel policy needs {'state': ..., 'rgb': ...} observations")
        out = self.raw.act(tf.constant(state), None if rgb is None else tf.constant(np.asarray(rgb, np.float32)),
                           None if seed is None else tf.constant(int(seed), tf.int64), deterministic)
        return out.numpy()


# building ---------------------------------------------------------------------------------------------------
def from_policy_file(pf: PolicyFile) -> Policy:
    spec = pf.spec
    cls = CLASSES[pf.kind]
    model = cls(network=hydra.utils.instantiate(spec["network"]), seed=int(spec.get("seed", 0)), **spec["kwargs"])
    assign_weights(model.network.weights, pf.weights.get("network", {}), f"policy file {pf.path} (network)")
    if "actor_ft" in pf.weights:
        actor_ft = hydra.utils.instantiate(spec["network"])
        model.build_network(actor_ft)
        assign_weights(actor_ft.weights, pf.weights["actor_ft"], f"policy file {pf.path} (actor_ft)")
        model.actor_ft = actor_ft
        model.ft_denoising_steps = int(spec["ft_denoising_steps"])
    return Policy(model, pf.normalization, bool(spec.get("clamp_obs", False)), pf.kind, pf.path)


def sampling_network_cfg(cfg: DictConfig) -> DictConfig:
    """The config of the network that samples: ``model.actor`` of a fine-tuning config, else ``model.network``."""
    return cfg.model.actor if "actor" in cfg.model else cfg.model.network


def model_from_run(cfg: DictConfig, checkpoint: str | Path) -> Any:
    """The sampling model of an old-style run: its config with the checkpoint's weights (fine-tuned ones when
    present)."""
    model_cfg, net_cfg = cfg.model, sampling_network_cfg(cfg)
    if "actor" in model_cfg:  # a fine-tuning config: rebuild the sampling part of the model
        network = hydra.utils.instantiate(net_cfg)
        target = hydra.utils.get_class(model_cfg._target_)
        kind = next(k for k, c in CLASSES.items() if issubclass(target, c))
        allowed = accepted_kwargs(CLASSES[kind]) - {"self", "network", "network_path"}
        block = OmegaConf.to_container(model_cfg, resolve=True)
        cond = {"cond_steps": int(cfg.cond_steps)} if "cond_steps" in cfg and "cond_steps" not in block else {}
        model = CLASSES[kind](network=network, **cond, **{k: v for k, v in block.items() if k in allowed})
    else:
        extra = {"cond_steps": int(cfg.cond_steps)} if "cond_steps" in cfg and "cond_steps" not in model_cfg else {}
        model = hydra.utils.instantiate(model_cfg, network_path=None, **extra)
    load_for_eval(model, net_cfg, checkpoint)
    return model


def read_run(path: str | Path) -> tuple[DictConfig, Path, Path]:
    """(config, checkpoint, run dir) of a run directory or of one of its ``checkpoint/state_<n>.npz``."""
    path = Path(path)
    run = path if path.is_dir() else path.parent.parent
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} not found: {path} is neither a policy file nor a dppo-tf run directory "
                              f"or checkpoint")
    from dppo.run import map_targets, register_resolvers

    register_resolvers()
    cfg = OmegaConf.load(cfg_path)
    map_targets(cfg)
    ckpt = path if path.is_file() else latest_checkpoint(run / "checkpoint")
    if ckpt is None:
        raise CheckpointError(f"no checkpoint in {run / 'checkpoint'}")
    return cfg, Path(ckpt), run


def from_run(path: str | Path) -> Policy:
    cfg, ckpt, _ = read_run(path)
    norm = None
    if cfg.get("normalization_path"):
        loaded = Normalization.load(cfg.normalization_path)
        norm = {k: getattr(loaded, k) for k in ("obs_min", "obs_max", "action_min", "action_max")}
    return Policy(model_from_run(cfg, ckpt), norm, clamp_obs(cfg), source=ckpt)


def load_policy(path: str | Path) -> Policy:
    """The policy of a policy file, a run directory or an old-style checkpoint (see the module docstring)."""
    path = Path(path)
    if path.is_dir() and (path / POLICY_FILE).is_file():
        path = path / POLICY_FILE
    if path.is_file() and is_policy_file(path):
        return from_policy_file(read_policy_file(path))
    return from_run(path)


def convert_run(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the policy file of an old-style run (directory or ``state_<n>.npz``); returns its path."""
    cfg, ckpt, run = read_run(path)
    model = model_from_run(cfg, ckpt)
    fine_tuned = model.actor_ft if isinstance(model, DiffusionModel) and model.actor_ft is not None else None
    written = save_policy(run, cfg, model, sampling_network_cfg(cfg), model.network.weights,
                          None if fine_tuned is None else fine_tuned.weights)
    if out is not None:
        written = written.rename(out)
    return written


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m dppo.policy <run dir | state_n.npz> [out.npz]")
    print(convert_run(*sys.argv[1:]))
