"""Gaussian PPO: single-step PPO on the whole action chunk of a Gaussian policy (the reference's PPO_Gaussian).

``SingleStepPolicy`` is what every policy that scores a stored sample with one log-probability per env step
(Gaussian, GMM, exact-likelihood diffusion) shows the shared ``PPOLearner`` (dppo/algos/ppo.py): its log-prob
clamped to [-5, 2] (after averaging over dims for the Gaussian, joint for the GMM), one scalar ratio clip,
weight 1, the entropy and mean std for the logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from dppo.policies.gaussian import GaussianModel
from dppo.utils import checkpoint as ckpt
from dppo.utils.cond import Cond

LOG_PROB_CLAMP = (-5.0, 2.0)


class SingleStepPolicy:
    """Mixin: the PPO learner's interface for a policy with one sample and one log-probability per env step.

    Subclasses implement ``policy_terms(cond, samples, training) -> (log_prob (B,), extras)`` where ``extras``
    may hold "entropy" (B,) and "std" (B,), and ``sample_for_rollout(cond, deterministic)``.
    """

    single_step = True
    actor_ft: keras.layers.Layer
    critic: keras.layers.Layer

    def _init_ppo(self, clip_ploss_coef: float, clip_vloss_coef: float | None, norm_adv: bool,
                  log_prob_clamp: Any) -> None:
        self.clip_ploss_coef = float(clip_ploss_coef)
        self.clip_vloss_coef = None if clip_vloss_coef is None else float(clip_vloss_coef)
        self.norm_adv = bool(norm_adv)
        self.clip_adv_quantiles = (0.0, 1.0)
        self.log_prob_clamp = None if log_prob_clamp is None else (float(log_prob_clamp[0]), float(log_prob_clamp[1]))
        self.ppo_clip = tf.constant([self.clip_ploss_coef])
        self.ppo_weights = tf.constant([1.0])

    def act(self, cond: Cond, deterministic: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Action chunk (B, T_p, D_a) and the sample to store (the same chunk)."""
        a = self.sample_for_rollout(cond, deterministic)
        return a, a

    def transition_log_probs(self, cond: Cond, samples: tf.Tensor,
                             training: bool = False) -> tuple[tf.Tensor, dict]:
        """Clamped log-probs (B, 1) of the stored samples, and the extras of ``policy_terms``."""
        lp, extras = self.policy_terms(cond, samples, training=training)
        if self.log_prob_clamp is not None:
            lp = tf.clip_by_value(lp, *self.log_prob_clamp)
        return lp[:, None], extras

    def trainable_actor_variables(self) -> list[tf.Variable]:
        return self.actor_ft.trainable_variables


def load_single_step_policy(model: Any, path: str | Path) -> None:
    """Initialise from ``path``: a pre-training checkpoint gives the policy ("model"); a fine-tuning
    checkpoint gives the fine-tuned policy ("actor_ft") and the critic."""
    from dppo.policies.gaussian import load_network_weights

    state = ckpt.load_checkpoint(path)
    load_network_weights(model, path)
    if "actor_ft" in ckpt.groups_in(state) and "critic" in ckpt.groups_in(state):
        ckpt.restore_group(state, "critic", model.critic.weights, path)


class FineTunedPolicyPPO(SingleStepPolicy):
    """Mixin for policies whose own network is fine-tuned (Gaussian, GMM): ``network`` (= ``actor_ft``) is
    trained; ``actor`` keeps a frozen copy of the initial weights (the reference keeps it for its unused BC term).
    Combine it with the policy class: ``class PPOGaussian(FineTunedPolicyPPO, GaussianModel)``."""

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer,
                 actor_ft: keras.layers.Layer | None = None, clip_ploss_coef: float = 0.01,
                 clip_vloss_coef: float | None = None, norm_adv: bool = True,
                 log_prob_clamp: tuple[float, float] | None = LOG_PROB_CLAMP, use_bc_loss: bool = False,
                 bc_loss_coeff: float = 0.0, network_path: str | None = None, **kwargs: Any):
        if use_bc_loss:
            raise NotImplementedError(f"model.use_bc_loss is not supported for {type(self).__name__} "
                                      "(no config uses it)")
        self._init_ppo(clip_ploss_coef, clip_vloss_coef, norm_adv, log_prob_clamp)
        self.critic = critic
        super().__init__(network=actor_ft if actor_ft is not None else actor, network_path=None, **kwargs)
        self.actor_ft = self.network
        self.actor = actor if actor_ft is not None else None
        self.critic(self.dummy_cond())
        self.sync_frozen_actor()
        self.network_path = network_path

    def load_initial_weights(self, path: str) -> None:
        """A pre-trained policy, or a fine-tuning checkpoint (policy and critic); the frozen copy follows."""
        load_single_step_policy(self, path)
        self.sync_frozen_actor()

    def sync_frozen_actor(self) -> None:
        """actor <- network (the frozen copy of the weights fine-tuning starts from)."""
        if self.actor is None:
            return
        self.build_network(self.actor)
        for dst, src in zip(self.actor.weights, self.network.weights):
            dst.assign(src)
        self.actor.trainable = False

    def sample_for_rollout(self, cond: Cond, deterministic: bool) -> tf.Tensor:
        return self.sample(cond, deterministic=deterministic)

    def policy_terms(self, cond: Cond, samples: tf.Tensor, training: bool) -> tuple[tf.Tensor, dict]:
        log_prob, entropy, std = self.log_prob_and_entropy(cond, samples, training=training)
        return log_prob, {"entropy": entropy, "std": std}


class PPOGaussian(FineTunedPolicyPPO, GaussianModel):
    """Gaussian policy fine-tuned with PPO (the reference's PPO_Gaussian / VPG_Gaussian). Log-prob = mean over
    the T_p * D_a dims, clamped to [-5, 2]; entropy = mean per-dim entropy; "std" = mean std."""
