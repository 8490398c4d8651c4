"""Export a trained policy as a TensorFlow SavedModel with one signature: ``action = policy(observation)``.

    dppo export <run dir> [--checkpoint state_N.npz] [--out <dir>]

The run directory is one written by a pre-training, fine-tuning or evaluation run (it holds ``config.yaml`` and
``checkpoint/``). The exported function takes normalised observations (B, cond_steps, obs_dim) and returns the
deterministically sampled action chunk (B, horizon_steps, action_dim) in the normalised action space.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import hydra
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from dppo.policies.diffusion import DiffusionModel
from dppo.runners.evaluate import load_for_eval
from dppo.utils.checkpoint import latest_checkpoint


def build_policy(cfg: DictConfig, checkpoint: str | Path) -> Any:
    """The policy of a run's config with the checkpoint's weights (fine-tuned ones when present)."""
    model_cfg = cfg.model
    if "actor" in model_cfg:  # a fine-tuning config: rebuild the sampling part of the model
        allowed = set(inspect.signature(DiffusionModel.__init__).parameters) - {"self", "network", "network_path"}
        kwargs = {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k in allowed}
        net_cfg = model_cfg.actor
        model = DiffusionModel(network=hydra.utils.instantiate(net_cfg), **kwargs)
    else:
        net_cfg = model_cfg.network
        model = hydra.utils.instantiate(model_cfg, network_path=None)
    load_for_eval(model, net_cfg, checkpoint)
    return model


class ExportedPolicy(tf.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        spec = tf.TensorSpec((None, model.cond_steps, model.obs_dim), tf.float32, name="observation")
        self.__call__ = tf.function(self._call, input_signature=[spec])

    def _call(self, observation: tf.Tensor) -> tf.Tensor:
        return self.model.sample({"state": observation}, deterministic=True)


def export_saved_model(model: Any, out: str | Path) -> Path:
    module = ExportedPolicy(model)
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.__call__})
    return Path(out)


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="dppo export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", default=None, help="default: the run's latest checkpoint")
    p.add_argument("--out", default=None, help="default: <run dir>/saved_model")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise SystemExit(f"{cfg_path} not found: pass a run directory written by dppo-tf")
    from dppo.run import map_targets, register_resolvers
    register_resolvers()
    cfg = OmegaConf.load(cfg_path)
    map_targets(cfg)
    ckpt = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(run / "checkpoint")
    if ckpt is None:
        raise SystemExit(f"no checkpoint in {run / 'checkpoint'}")
    out = export_saved_model(build_policy(cfg, ckpt), args.out or run / "saved_model")
    print(f"exported {ckpt} -> {out} (signature serving_default: observation -> action)")
