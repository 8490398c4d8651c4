"""GMM policy head (the reference's GMM_MLP): three (Residual)MLPs on the flattened state for the mode means, the
log-variances (or a fixed / learned-fixed std per mode) and the mixture logits."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from dppo.nets.gaussian_mlp import GaussianStd
from dppo.nets.mlp import LazyBuild, make_mlp
from dppo.utils.cond import Cond


class GMM_MLP(LazyBuild, GaussianStd, keras.layers.Layer):  # noqa: N801 (the reference's class name)
    """cond -> (means (B, M, T_p*D_a) in [-1, 1], stds (B, M, T_p*D_a), logits (B, M))."""

    def __init__(self, action_dim: int, horizon_steps: int, cond_dim: int, mlp_dims: Sequence[int] = (256, 256, 256),
                 num_modes: int = 5, activation_type: str = "Mish", residual_style: bool = False,
                 use_layernorm: bool = False, fixed_std: float | None = None, learn_fixed_std: bool = False,
                 std_min: float = 0.01, std_max: float = 1.0, tanh_output: bool = True, **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        self.action_dim, self.horizon_steps, self.cond_dim = action_dim, horizon_steps, cond_dim
        self.num_modes = num_modes
        self.tanh_output = tanh_output
        out_dim = action_dim * horizon_steps * num_modes
        kw = dict(activation_type=activation_type, out_activation_type="Identity", use_layernorm=use_layernorm)
        self._init_std(fixed_std, learn_fixed_std, std_min, std_max, action_dim * num_modes)
        self.mlp_mean = make_mlp([cond_dim, *mlp_dims, out_dim], residual_style, **kw)
        self.mlp_logvar = make_mlp([cond_dim, *mlp_dims, out_dim], residual_style, **kw) if fixed_std is None else None
        self.mlp_weights = make_mlp([cond_dim, *mlp_dims, num_modes], residual_style, **kw)

    def call(self, cond: Cond, training: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        state = cond["state"]
        b = tf.shape(state)[0]
        m, d = self.num_modes, self.horizon_steps * self.action_dim
        x = tf.reshape(state, (b, self.cond_dim))
        mean = self.mlp_mean(x, training=training)
        if self.tanh_output:
            mean = tf.tanh(mean)
        mean = tf.reshape(mean, (b, m, d))
        if self.learn_fixed_std:  # (M * D_a) -> (1, M, D_a) tiled over the horizon
            scale = tf.reshape(self._learned_fixed_scale(), (1, m, self.action_dim))
            scale = tf.tile(scale, (b, 1, self.horizon_steps))
        elif self.use_fixed_std:
            scale = tf.fill(tf.shape(mean), tf.cast(self.fixed_std, mean.dtype))
        else:
            scale = self._clamped_scale(tf.reshape(self.mlp_logvar(x, training=training), (b, m, d)))
        logits = self.mlp_weights(x, training=training)
        return mean, scale, logits
