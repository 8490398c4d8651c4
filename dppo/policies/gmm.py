"""Gaussian-mixture policy: a network cond -> (means (B, M, D), stds (B, M, D),
logits (B, M)) with D = T_p * D_a; each mode an independent Normal over the whole chunk."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dppo.policies import distributions as dist
from dppo.policies.gaussian import DETERMINISTIC_STD, infer_dims, load_network_weights
from dppo.utils.cond import Cond
from dppo.utils.seeding import tf_stream


class GMMModel(tf.Module):
    """Mixture policy with the DiffusionModel-like interface (``sample``, ``loss``, ``log_prob``, ``entropy``).

    Sampling draws a mode from the logits, then a Normal draw with z clamped to +-``randn_clip_value``
    (the reference does not clamp GMM draws; at the default 10 this is immaterial). Deterministic sampling
    keeps the mode draw but uses std 1e-4, as the reference does.
    """

    load_ema = False

    def __init__(self, network: keras.layers.Layer, horizon_steps: int, obs_dim: int | None = None,
                 action_dim: int | None = None, cond_steps: int = 1, randn_clip_value: float = 10.0,
                 network_path: str | None = None, seed: int = 0, device: Any = None, name: str | None = None):
        super().__init__(name=name)
        self.network = network
        self.horizon_steps, self.cond_steps = int(horizon_steps), int(cond_steps)
        self.obs_dim, self.action_dim = infer_dims(network, obs_dim, action_dim, self.cond_steps)
        self.randn_clip_value = float(randn_clip_value)
        self.seed = int(seed)
        self.rng = tf_stream(seed, "sampling")
        self.build_network(self.network)
        self._sample = tf.function(self._sample_graph, reduce_retracing=True, autograph=False)
        if network_path:
            load_network_weights(self, network_path)

    def dummy_cond(self, batch: int = 1) -> Cond:
        cond = {"state": tf.zeros((batch, self.cond_steps, self.obs_dim))}
        rgb_shape = getattr(self.network, "rgb_shape", None)
        if rgb_shape is not None:
            cond["rgb"] = tf.zeros((batch, *rgb_shape))
        return cond

    def build_network(self, net: keras.layers.Layer) -> None:
        net(self.dummy_cond())

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
