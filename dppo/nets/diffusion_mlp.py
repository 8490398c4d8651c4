"""DiffusionMLP: eps_theta(x_t, t, state) for state-based policies."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from dppo.nets.embeddings import SinusoidalPosEmb
from dppo.nets.mlp import MLP, Linear, make_mlp, mish


class DiffusionMLP(keras.layers.Layer):
    """MLP on concat[x_flat, time_emb(t), state_flat] -> (B, horizon_steps, action_dim)."""

    def __init__(self, action_dim: int, horizon_steps: int, cond_dim: int, time_dim: int = 16,
                 mlp_dims: Sequence[int] = (256, 256), cond_mlp_dims: Sequence[int] | None = None,
                 activation_type: str = "Mish", out_activation_type: str = "Identity",
                 use_layernorm: bool = False, residual_style: bool = False, **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        self.action_dim, self.horizon_steps = action_dim, horizon_steps
        self.time_emb = SinusoidalPosEmb(time_dim)
        self.time_l1, self.time_l2 = Linear(time_dim * 2), Linear(time_dim)
        self.cond_mlp = (MLP([cond_dim, *cond_mlp_dims], activation_type=activation_type,
                             out_activation_type="Identity") if cond_mlp_dims else None)
        cond_out = cond_mlp_dims[-1] if cond_mlp_dims else cond_dim
        in_dim = horizon_steps * action_dim + time_dim + cond_out
        self.mlp = make_mlp([in_dim, *mlp_dims, horizon_steps * action_dim], residual_style,
                            activation_type=activation_type, out_activation_type=out_activation_type,
                            use_layernorm=use_layernorm)

    def call(self, x: tf.Tensor, t: tf.Tensor, cond: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        b = tf.shape(x)[0]
        state = cond["state"]
        x_flat = tf.reshape(x, (b, self.horizon_steps * self.action_dim))
        s = tf.reshape(state, (b, -1))
        if self.cond_mlp is not None:
            s = self.cond_mlp(s, training=training)
        emb = self.time_l2(mish(self.time_l1(self.time_emb(t))))
        out = self.mlp(tf.concat([x_flat, emb, s], axis=-1), training=training)
        return tf.reshape(out, (b, self.horizon_steps, self.action_dim))
