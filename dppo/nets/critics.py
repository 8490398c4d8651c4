"""Critics: V(s) (`CriticObs`) and double-head Q(s, a) (`CriticObsAct`)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from dppo.nets.mlp import LazyBuild, make_mlp
from dppo.nets.vit import VisionCondEncoder


class CriticObs(keras.layers.Layer):
    """V(s): (Residual)MLP on the flattened observation history -> (B,)."""

    def __init__(self, cond_dim: int, mlp_dims: Sequence[int] = (256, 256, 256),
                 activation_type: str = "Mish", use_layernorm: bool = False, residual_style: bool = False,
                 **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        self.mlp = make_mlp([cond_dim, *mlp_dims, 1], residual_style, activation_type=activation_type,
                            out_activation_type="Identity", use_layernorm=use_layernorm)

    def call(self, cond: dict[str, tf.Tensor] | tf.Tensor, training: bool = False) -> tf.Tensor:
        state = cond["state"] if isinstance(cond, dict) else cond
        s = tf.reshape(state, (tf.shape(state)[0], -1))
        return tf.squeeze(self.mlp(s, training=training), -1)


class CriticObsAct(keras.layers.Layer):
    """Q(s, a_chunk) with two heads (double Q). Plain MLPs, as the reference effectively builds [quirk:
    its misspelled residual flag means ``residual_style`` is ignored there; here it is honoured]."""

    def __init__(self, cond_dim: int, action_dim: int, action_steps: int = 1,
                 mlp_dims: Sequence[int] = (256, 256), activation_type: str = "Mish",
                 use_layernorm: bool = False, residual_style: bool = False, double_q: bool = True, **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        dims = [cond_dim + action_dim * action_steps, *mlp_dims, 1]
        kw = dict(activation_type=activation_type, out_activation_type="Identity", use_layernorm=use_layernorm)
        self.q1 = make_mlp(dims, residual_style, **kw)
        self.q2 = make_mlp(dims, residual_style, **kw) if double_q else None

    def call(self, cond: dict[str, tf.Tensor] | tf.Tensor, action: tf.Tensor, training: bool = False):
        state = cond["state"] if isinstance(cond, dict) else cond
        b = tf.shape(state)[0]
        x = tf.concat([tf.reshape(state, (b, -1)), tf.reshape(action, (b, -1))], axis=-1)
        q1 = tf.squeeze(self.q1(x, training=training), -1)
        if self.q2 is None:
            return q1
        return q1, tf.squeeze(self.q2(x, training=training), -1)


class ViTCritic(LazyBuild, CriticObs):
    """V(s) from pixels + proprio (the reference's ViTCritic): its own ViT backbone and SpatialEmb compression, then the
    CriticObs MLP on concat[features, state]. ``augment`` random-shifts images in training calls unless
    ``no_augment`` (the pixel PPO agent augments the rollout itself and passes no_augment=True)."""

    def __init__(self, backbone: keras.layers.Layer, cond_dim: int, img_cond_steps: int = 1, spatial_emb: int = 128,
                 dropout: float = 0.0, augment: bool = False, num_img: int = 1, visual_feature_dim: int = 128,
                 seed: int = 0, **kwargs):
        feature_dim = spatial_emb * num_img if spatial_emb > 0 else visual_feature_dim
        super().__init__(cond_dim=feature_dim + cond_dim, **kwargs)
        self.encoder = VisionCondEncoder(backbone, cond_dim, img_cond_steps=img_cond_steps, spatial_emb=spatial_emb,
                                         visual_feature_dim=visual_feature_dim, dropout=dropout, num_img=num_img,
                                         augment=augment, seed=seed)

    @property
    def rgb_shape(self) -> tuple[int, int, int, int]:
        return self.encoder.rgb_shape

    def call(self, cond: dict[str, tf.Tensor], training: bool = False, no_augment: bool = False) -> tf.Tensor:
        feat = self.encoder(cond, training=training, no_augment=no_augment)
        return tf.squeeze(self.mlp(feat, training=training), -1)
