"""GMM PPO: single-step PPO for a Gaussian-mixture policy (the reference's PPO_GMM / VPG_GMM).

Log-prob = the JOINT mixture log-density of the chunk, clamped to [-5, 2] as in the reference. Note that
with a small std (0.1) the joint density of T_p * D_a dims is usually far above e^2, so the clamp saturates
and those samples give no policy gradient [quirk of the reference, kept for comparability; pass
``log_prob_clamp: null`` to score unclamped]. Entropy = weight-averaged component entropy; "std" =
weight-averaged mean std.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dppo.algos.ppo_gaussian import LOG_PROB_CLAMP, SingleStepPolicy, load_single_step_policy
from dppo.policies.gmm import GMMModel
from dppo.utils.cond import Cond


class PPOGMM(SingleStepPolicy, GMMModel):
    """GMM policy fine-tuned with PPO; ``network`` (= ``actor_ft``) is trained, ``actor`` is a frozen copy
    of the initial weights."""

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer,
                 actor_ft: keras.layers.Layer | None = None, clip_ploss_coef: float = 0.01,
                 clip_vloss_coef: float | None = None, norm_adv: bool = True,
                 log_prob_clamp: tuple[float, float] | None = LOG_PROB_CLAMP, use_bc_loss: bool = False,
                 bc_loss_coeff: float = 0.0, network_path: str | None = None, **kwargs: Any):
        if use_bc_loss:
            raise NotImplementedError("model.use_bc_loss is not supported for GMM PPO (no config uses it)")
        self._init_ppo(clip_ploss_coef, clip_vloss_coef, norm_adv, log_prob_clamp)
        self.critic = critic
        super().__init__(network=actor_ft if actor_ft is not None else actor, network_path=None, **kwargs)
        self.actor_ft = self.network
        self.actor = actor if actor_ft is not None else None
        self.critic(self.dummy_cond())
        if network_path:
            load_single_step_policy(self, network_path)
        if self.actor is not None:
            self.build_network(self.actor)
            for dst, src in zip(self.actor.weights, self.network.weights):
                dst.assign(src)
            self.actor.trainable = False

    def sample_for_rollout(self, cond: Cond, deterministic: bool) -> tf.Tensor:
        return self.sample(cond, deterministic=deterministic)

    def policy_terms(self, cond: Cond, samples: tf.Tensor, training: bool) -> tuple[tf.Tensor, dict]:
        log_prob, entropy, std = self.log_prob_and_entropy(cond, samples, training=training)
        return log_prob, {"entropy": entropy, "std": std}
