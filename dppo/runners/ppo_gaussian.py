"""On-policy fine-tuning of single-step policies (Gaussian / GMM PPO) with the shared PPO loop.

``TrainPPOGaussianAgent`` is ``TrainPPOAgent`` plus what the reference's pixel agent adds: with
``train.augment`` every stored rgb frame of the rollout is random-shifted once (RandomShiftsAug, pad 4)
before old values / log-probs and all minibatch updates; ``train.grad_accumulate`` sums gradients over that
many minibatches per optimizer step. Without those keys it is the plain loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from dppo.algos.ppo import PPOBatch
from dppo.nets.vit import RandomShiftsAug
from dppo.runners.ppo import TrainPPOAgent, with_initial_weights
from dppo.utils.seeding import tf_stream
from dppo.utils.validate import instantiate

AUGMENT_CHUNK = 1024  # frames per compiled augmentation call


class TrainPPOGaussianAgent(TrainPPOAgent):
    """PPO fine-tuning of a Gaussian or GMM policy (state or pixels)."""

    def __init__(self, cfg: DictConfig):
        self.augment = bool(cfg.train.get("augment", False))
        super().__init__(cfg)
        # the model holds the augmentation stream, so checkpoints carry it and a resumed run draws the same shifts
        self.aug = RandomShiftsAug(pad=4, rng=self.model.augment_rng) if self.augment else None
        self._shift = tf.function(lambda x: self.aug(x), autograph=False) if self.augment else None

    def build_model(self, cfg: DictConfig) -> Any:
        actor_ft = instantiate(cfg.model.actor)
        model = instantiate(cfg.model, actor_ft=actor_ft, seed=self.seed, **self.model_kwargs(cfg))
        return self.with_augment_stream(with_initial_weights(model))

    def with_augment_stream(self, model: Any) -> Any:
        """Give the model the augmentation stream, so checkpoints carry it and a resumed run draws the same shifts."""
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

    def prepare_batch(self, ro: dict[str, Any]) -> PPOBatch:
        if self.aug is not None and "rgb" in ro["obs"]:
            ro = {**ro, "obs": {**ro["obs"], "rgb": self.augment_frames(ro["obs"]["rgb"])}}
        return super().prepare_batch(ro)


TrainPPOImgGaussianAgent = TrainPPOGaussianAgent


class TrainPPOImgDiffusionAgent(TrainPPOGaussianAgent):
    """DPPO from pixels: every stored frame is random-shifted once per iteration (``train.augment``), as above;
    ``train.grad_accumulate`` sums the gradients of that many minibatches per optimizer step (the learner's)."""

    def build_model(self, cfg: DictConfig) -> Any:
        return self.with_augment_stream(TrainPPOAgent.build_model(self, cfg))
