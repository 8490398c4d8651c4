"""Gaussian policy: a network cond -> (mean, std) over the flattened chunk (B, T_p * D_a).

Same interface as ``DiffusionModel`` where it makes sense: ``network``, ``build_network``, ``dummy_cond``,
``rng``, compiled ``sample`` and the pre-training ``loss``; plus ``log_prob`` / ``entropy`` for PPO.
Pre-trained Gaussian/GMM checkpoints are loaded from their "model" weights (``load_ema = False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from dppo.policies import distributions as dist
from dppo.utils.cond import Cond
from dppo.utils.seeding import tf_stream

DETERMINISTIC_STD = 1e-4  # the reference's std for deterministic (evaluation) draws


def infer_dims(network: keras.layers.Layer, obs_dim: int | None, action_dim: int | None,
               cond_steps: int) -> tuple[int, int]:
    """(obs_dim, action_dim), taken from the network when the config leaves them out (the reference's
    Gaussian configs give them to the network only)."""
    if action_dim is None:
        action_dim = getattr(network, "action_dim", None)
    if obs_dim is None:
        cond_dim = getattr(network, "cond_dim", None)
        obs_dim = cond_dim // cond_steps if cond_dim is not None else None
    if action_dim is None or obs_dim is None:
        raise ValueError("model.obs_dim / model.action_dim are needed: the network does not expose "
                         "cond_dim / action_dim")
    return int(obs_dim), int(action_dim)


def load_network_weights(model: Any, path: str | Path) -> None:
    """Load ``model.network`` from a checkpoint's "model" group (or "actor_ft" of a fine-tuning run).
    A checkpoint without the network's optional weights (a learned fixed std added for fine-tuning) loads
    into the remaining weights, as the reference's strict=False load does."""
    from dppo.utils import checkpoint as ckpt

    state = ckpt.load_checkpoint(path)
    names = ckpt.groups_in(state)
    group = "model" if "model" in names else "actor_ft" if "actor_ft" in names else "model"
    weights = list(model.network.weights)
    n_saved = sum(1 for k in state if k.rsplit("/", 1)[0] == group)
    optional = getattr(model.network, "optional_weights", lambda: [])()
    if optional and n_saved == len(weights) - len(optional):
        skip = {id(w) for w in optional}
        weights = [w for w in weights if id(w) not in skip]
    ckpt.restore_group(state, group, weights, path)


class ChunkPolicy(tf.Module):
    """What the Gaussian and GMM policies share: a network cond -> distribution parameters over the flattened
    action chunk, its dims, the sampling stream and the compiled ``sample`` (subclasses write ``_sample_graph``)."""

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
        self.network_path = network_path  # read by load_initial_weights, not here: constructors do no file I/O

    def load_initial_weights(self, path: str) -> None:
        load_network_weights(self, path)

    def dummy_cond(self, batch: int = 1) -> Cond:
        cond = {"state": tf.zeros((batch, self.cond_steps, self.obs_dim))}
        rgb_shape = getattr(self.network, "rgb_shape", None)
        if rgb_shape is not None:
            cond["rgb"] = tf.zeros((batch, *rgb_shape))
        return cond

    def build_network(self, net: keras.layers.Layer) -> None:
        """Create the weights of ``net`` by calling it once."""
        net(self.dummy_cond())


class GaussianModel(ChunkPolicy):
    """Diagonal Gaussian over the action chunk. ``tanh_output`` squashes draws *after* sampling (SAC-style,
    the reference's GaussianModel flag); the networks' own ``tanh_output`` squashes the mean (PPO)."""

    def __init__(self, network: keras.layers.Layer, horizon_steps: int, tanh_output: bool = False,
                 ent_coef: float = 0.0, **kwargs: Any):
        self.tanh_output = bool(tanh_output)
        self.ent_coef = float(ent_coef)
        super().__init__(network, horizon_steps, **kwargs)

    # ----------------------------------------------------------------------------------------------------
    def dist_params(self, cond: Cond, net: keras.layers.Layer | None = None, training: bool = False,
                    deterministic: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean, std), each (B, T_p * D_a); deterministic replaces std by 1e-4."""
        mean, std = (net or self.network)(cond, training=training)
        if deterministic:
            std = tf.fill(tf.shape(mean), DETERMINISTIC_STD)
        return mean, std

    # ----------------------------------------------------------------------------------------------------
    def _sample_graph(self, cond: Cond, deterministic: bool = False) -> tf.Tensor:
        mean, std = self.dist_params(cond, deterministic=deterministic)
        a = dist.normal_sample(self.rng, mean, std, self.randn_clip_value)
        if self.tanh_output:
            a = tf.tanh(a)
        return tf.reshape(a, (tf.shape(mean)[0], self.horizon_steps, self.action_dim))

    def sample(self, cond: Cond, deterministic: bool = False) -> tf.Tensor:
        """Draw a chunk (B, T_p, D_a) within mean +- randn_clip_value * std (compiled)."""
        return self._sample(cond, deterministic=deterministic)

    def rsample(self, cond: Cond, net: keras.layers.Layer | None = None, training: bool = False,
                deterministic: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Reparameterised draw (B, T_p, D_a) and its log-prob summed over dims (B,), with the tanh
        correction when ``tanh_output``. Differentiable; call inside the caller's tf.function."""
        mean, std = self.dist_params(cond, net, training, deterministic)
        u = dist.normal_sample(self.rng, mean, std, self.randn_clip_value)
        if self.tanh_output:
            a, logp = tf.tanh(u), dist.tanh_normal_log_prob(u, mean, std)
        else:
            a, logp = u, tf.reduce_sum(dist.normal_log_prob(u, mean, std), axis=-1)
        return tf.reshape(a, (tf.shape(mean)[0], self.horizon_steps, self.action_dim)), logp

    # ----------------------------------------------------------------------------------------------------
    def _flat(self, actions: tf.Tensor) -> tf.Tensor:
        return tf.reshape(actions, (tf.shape(actions)[0], self.horizon_steps * self.action_dim))

    def log_prob(self, cond: Cond, actions: tf.Tensor, net: keras.layers.Layer | None = None,
                 training: bool = False) -> tf.Tensor:
        """MEAN over the T_p * D_a per-dim log-densities of ``actions`` (B, T_p, D_a), as the reference's
        Gaussian PPO scores actions (clamping to [-5, 2] is the PPO loss's job): (B,)."""
        mean, std = self.dist_params(cond, net, training)
        return tf.reduce_mean(dist.normal_log_prob(self._flat(actions), mean, std), axis=-1)

    def log_prob_and_entropy(self, cond: Cond, actions: tf.Tensor, net: keras.layers.Layer | None = None,
                             training: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(mean per-dim log-prob (B,), mean per-dim entropy (B,), mean std (B,)) from one network call."""
        mean, std = self.dist_params(cond, net, training)
        logp = tf.reduce_mean(dist.normal_log_prob(self._flat(actions), mean, std), axis=-1)
        return logp, tf.reduce_mean(dist.normal_entropy(std), axis=-1), tf.reduce_mean(std, axis=-1)

    def entropy(self, cond: Cond, net: keras.layers.Layer | None = None, training: bool = False) -> tf.Tensor:
        """Mean per-dim entropy (B,)."""
        _, std = self.dist_params(cond, net, training)
        return tf.reduce_mean(dist.normal_entropy(std), axis=-1)

    def loss(self, actions: tf.Tensor, cond: Cond, net: keras.layers.Layer | None = None,
             training: bool = True) -> tf.Tensor:
        """Pre-training NLL: -log N(a; mean, std) averaged over batch and dims, minus ent_coef * entropy."""
        mean, std = self.dist_params(cond, net, training)
        nll = -tf.reduce_mean(dist.normal_log_prob(self._flat(actions), mean, std))
        if self.ent_coef:
            nll -= self.ent_coef * tf.reduce_mean(dist.normal_entropy(std))
        return nll
