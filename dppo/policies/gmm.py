"""Gaussian-mixture policy: a network cond -> (means (B, M, D), stds (B, M, D),
logits (B, M)) with D = T_p * D_a; each mode an independent Normal over the whole chunk."""

from __future__ import annotations

import keras
import tensorflow as tf

from dppo.policies import distributions as dist
from dppo.policies.gaussian import DETERMINISTIC_STD, ChunkPolicy
from dppo.utils.cond import Cond


class GMMModel(ChunkPolicy):
    """Mixture policy with the DiffusionModel-like interface (``sample``, ``loss``, ``log_prob``, ``entropy``).

    Sampling draws a mode from the logits, then a Normal draw with z clamped to +-``randn_clip_value``
    (the reference does not clamp GMM draws; at the default 10 this is immaterial). Deterministic sampling
    keeps the mode draw but uses std 1e-4, as the reference does.
    """

    def dist_params(self, cond: Cond, net: keras.layers.Layer | None = None, training: bool = False,
                    deterministic: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        means, stds, logits = (net or self.network)(cond, training=training)
        if deterministic:
            stds = tf.fill(tf.shape(means), DETERMINISTIC_STD)
        return means, stds, logits

    # ----------------------------------------------------------------------------------------------------
    def _sample_graph(self, cond: Cond, deterministic: bool = False) -> tf.Tensor:
        means, stds, logits = self.dist_params(cond, deterministic=deterministic)
        a = dist.gmm_sample(self.rng, means, stds, logits, self.randn_clip_value)
        return tf.reshape(a, (tf.shape(means)[0], self.horizon_steps, self.action_dim))

    def sample(self, cond: Cond, deterministic: bool = False) -> tf.Tensor:
        """Draw a chunk (B, T_p, D_a) (compiled)."""
        return self._sample(cond, deterministic=deterministic)

    # ----------------------------------------------------------------------------------------------------
    def _flat(self, actions: tf.Tensor) -> tf.Tensor:
        return tf.reshape(actions, (tf.shape(actions)[0], self.horizon_steps * self.action_dim))

    def log_prob(self, cond: Cond, actions: tf.Tensor, net: keras.layers.Layer | None = None,
                 training: bool = False) -> tf.Tensor:
        """Joint mixture log-density of the whole chunk (B,) (not averaged over dims, as the reference)."""
        means, stds, logits = self.dist_params(cond, net, training)
        return dist.gmm_log_prob(self._flat(actions), means, stds, logits)

    def log_prob_and_entropy(self, cond: Cond, actions: tf.Tensor, net: keras.layers.Layer | None = None,
                             training: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(joint log-prob (B,), weight-averaged component entropy (B,), weight-averaged mean std (B,))."""
        means, stds, logits = self.dist_params(cond, net, training)
        return (dist.gmm_log_prob(self._flat(actions), means, stds, logits), dist.gmm_entropy(stds, logits),
                dist.gmm_mean_std(stds, logits))

    def entropy(self, cond: Cond, net: keras.layers.Layer | None = None, training: bool = False) -> tf.Tensor:
        """The reference's approximate entropy: weight-averaged component entropy (B,)."""
        _, stds, logits = self.dist_params(cond, net, training)
        return dist.gmm_entropy(stds, logits)

    def loss(self, actions: tf.Tensor, cond: Cond, net: keras.layers.Layer | None = None,
             training: bool = True) -> tf.Tensor:
        """Pre-training NLL: -mean_b log p(a_b)."""
        return -tf.reduce_mean(self.log_prob(cond, actions, net, training))
