"""On-policy fine-tuning of single-step policies (Gaussian / GMM PPO, spec 3.1) with the shared PPO loop.

``TrainPPOGaussianAgent`` is ``TrainPPOAgent`` plus what the reference's pixel agent adds (spec 2.8): with
``train.augment`` every stored rgb frame of the rollout is random-shifted once (RandomShiftsAug, pad 4)
before old values / log-probs and all minibatch updates; ``train.grad_accumulate`` sums gradients over that
many minibatches per optimizer step. Without those keys it is the plain loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from dppo.nets.vit import RandomShiftsAug
from dppo.runners.ppo import TrainPPOAgent
from dppo.utils.seeding import tf_stream
from dppo.utils.validate import instantiate

AUGMENT_CHUNK = 1024  # frames per compiled augmentation call


class TrainPPOGaussianAgent(TrainPPOAgent):
    """PPO fine-tuning of a Gaussian or GMM policy (state or pixels)."""

    def __init__(self, cfg: DictConfig):
        self.augment = bool(cfg.train.get("augment", False))
        self.grad_accumulate = int(cfg.train.get("grad_accumulate", 1) or 1)
        super().__init__(cfg)
        # the model holds the augmentation stream, so checkpoints carry it and a resumed run draws the same shifts
        self.aug = RandomShiftsAug(pad=4, rng=self.model.augment_rng) if self.augment else None
        self._shift = tf.function(lambda x: self.aug(x), autograph=False) if self.augment else None

    def build_model(self, cfg: DictConfig) -> Any:
        actor_ft = instantiate(cfg.model.actor)
        extra = {"grad_accumulate": self.grad_accumulate} if self.grad_accumulate > 1 else {}
        model = instantiate(cfg.model, actor_ft=actor_ft, seed=self.seed, **extra, **self.model_kwargs(cfg))
        if self.augment:
            model.augment_rng = tf_stream(self.seed, "augment")
        return model

    def augment_frames(self, rgb: np.ndarray) -> np.ndarray:
        """Random-shift every frame of rgb (..., C, H, W) independently."""
        shape = rgb.shape
        flat = rgb.reshape(-1, *shape[-3:])
        out = np.concatenate([self._shift(tf.constant(flat[i:i + AUGMENT_CHUNK])).numpy()
                              for i in range(0, len(flat), AUGMENT_CHUNK)])
        return out.reshape(shape)

    def prepare_batch(self, ro: dict[str, Any]) -> dict[str, Any]:
        if self.aug is not None and "rgb" in ro["obs"]:
            ro = {**ro, "obs": {**ro["obs"], "rgb": self.augment_frames(ro["obs"]["rgb"])}}
        return super().prepare_batch(ro)


TrainPPOImgGaussianAgent = TrainPPOGaussianAgent


class TrainPPOImgDiffusionAgent(TrainPPOGaussianAgent):
    """DPPO from pixels: every stored frame is random-shifted once per iteration (``train.augment``), as above.
    ``train.grad_accumulate`` k is realised as minibatches of k x ``batch_size`` transitions: under Adam, one step
    on summed gradients of k minibatches equals one step on their union up to the per-minibatch advantage
    normalisation."""

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        self.batch_size *= self.grad_accumulate

    def build_model(self, cfg: DictConfig) -> Any:
        return TrainPPOAgent.build_model(self, cfg)
