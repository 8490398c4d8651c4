"""VisionDiffusionMLP: eps_theta(x_t, t, {state, rgb}) with a ViT image encoder."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from dppo.nets.embeddings import SinusoidalPosEmb
from dppo.nets.mlp import LazyBuild, Linear, make_mlp, mish
from dppo.nets.vit import VisionCondEncoder
from dppo.utils.cond import Cond


class VisionDiffusionMLP(LazyBuild, keras.layers.Layer):
    """(Residual)MLP on concat[x_flat, time_emb(t), image features, state_flat] -> (B, T_p, D_a).

    Image features: the backbone (``VitEncoder``) on the last ``img_cond_steps`` frames stacked on channels,
    compressed by SpatialEmb (``spatial_emb`` > 0) or Linear + LayerNorm + Dropout + ReLU; two cameras
    (``num_img`` = 2) go through the shared backbone separately. ``augment`` random-shifts images in
    training calls (the pre-training loss).
    """

    def __init__(self, backbone: keras.layers.Layer, action_dim: int, horizon_steps: int, cond_dim: int,
                 img_cond_steps: int = 1, time_dim: int = 16, mlp_dims: Sequence[int] = (256, 256),
                 activation_type: str = "Mish", out_activation_type: str = "Identity", use_layernorm: bool = False,
                 residual_style: bool = False, spatial_emb: int = 0, visual_feature_dim: int = 128,
                 dropout: float = 0.0, num_img: int = 1, augment: bool = False, seed: int = 0, **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        self.action_dim, self.horizon_steps, self.cond_dim = action_dim, horizon_steps, cond_dim
        self.encoder = VisionCondEncoder(backbone, cond_dim, img_cond_steps=img_cond_steps, spatial_emb=spatial_emb,
                                         visual_feature_dim=visual_feature_dim, dropout=dropout, num_img=num_img,
                                         augment=augment, seed=seed)
        self.time_emb = SinusoidalPosEmb(time_dim)
        self.time_l1, self.time_l2 = Linear(time_dim * 2), Linear(time_dim)
        in_dim = horizon_steps * action_dim + time_dim + self.encoder.out_dim
        self.mlp = make_mlp([in_dim, *mlp_dims, horizon_steps * action_dim], residual_style,
                            activation_type=activation_type, out_activation_type=out_activation_type,
                            use_layernorm=use_layernorm)

    @property
    def rgb_shape(self) -> tuple[int, int, int, int]:
        """(T_img, C, H, W) of cond["rgb"] per sample; ``DiffusionModel.dummy_cond`` uses it to build."""
        return self.encoder.rgb_shape

    def call(self, x: tf.Tensor, t: tf.Tensor, cond: Cond, training: bool = False) -> tf.Tensor:
        b = tf.shape(x)[0]
        x_flat = tf.reshape(x, (b, self.horizon_steps * self.action_dim))
        cond_encoded = self.encoder(cond, training=training)
        emb = self.time_l2(mish(self.time_l1(self.time_emb(t))))
        out = self.mlp(tf.concat([x_flat, emb, cond_encoded], axis=-1), training=training)
        return tf.reshape(out, (b, self.horizon_steps, self.action_dim))
