"""Pixel encoders: a small ViT (``VitEncoder``), IBRL's ``SpatialEmb`` token compression,
``RandomShiftsAug`` (edge pad + random integer crop) and ``VisionCondEncoder``, the image + proprio
conditioning shared by ``VisionDiffusionMLP``, ``Gaussian_VisionMLP`` and ``ViTCritic``.

Images come in the reference's layout (B, C, H, W) with values in [0, 255]; layers transpose to
channels-last internally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from dppo.nets.mlp import LazyBuild, Linear
from dppo.utils.cond import Cond
from dppo.utils.seeding import tf_stream


def _dim(x: tf.Tensor, axis: int) -> int | tf.Tensor:
    """Static size of ``axis`` when known, else the dynamic one."""
    d = x.shape[axis]
    return d if d is not None else tf.shape(x)[axis]


def vit_dense(units: int, **kwargs) -> keras.layers.Dense:
    """Linear with the ViT init: weights N(0, 0.02) (the reference's trunc_normal_ truncates at +-2 absolute,
    i.e. 100 std, so it is a plain normal), zero bias."""
    return keras.layers.Dense(units, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                              bias_initializer="zeros", **kwargs)


class TorchConv2D(keras.layers.Conv2D):
    """Conv2D (channels-last, no padding) with PyTorch's default init U(+-1/sqrt(C_in * kh * kw))."""

    def build(self, input_shape):
        fan_in = int(input_shape[-1]) * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        self.kernel_initializer = keras.initializers.RandomUniform(-bound, bound)
        self.bias_initializer = keras.initializers.RandomUniform(-bound, bound)
        super().build(input_shape)


def multi_head_attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, n_head: int) -> tf.Tensor:
    """Scaled dot-product attention over ``n_head`` heads: q (B, Tq, E), k/v (B, Tk, E) -> (B, Tq, E)."""
    b, e = tf.shape(q)[0], q.shape[-1]
    d = e // n_head

    def heads(x):
        return tf.transpose(tf.reshape(x, (b, -1, n_head, d)), (0, 2, 1, 3))

    att = tf.nn.softmax(tf.matmul(heads(q), heads(k), transpose_b=True) / math.sqrt(d), axis=-1)
    return tf.reshape(tf.transpose(tf.matmul(att, heads(v)), (0, 2, 1, 3)), (b, -1, e))


class ViTAttention(LazyBuild, keras.layers.Layer):
    """Self-attention with one fused qkv projection, as the reference's ViT."""

    def __init__(self, embed_dim: int, num_head: int, **kwargs):
        super().__init__(**kwargs)
        if embed_dim % num_head:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_head}")
        self.num_head = num_head
        self.qkv_proj, self.out_proj = vit_dense(3 * embed_dim), vit_dense(embed_dim)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        q, k, v = tf.split(self.qkv_proj(x), 3, axis=-1)
        return self.out_proj(multi_head_attention(q, k, v, self.num_head))


class ViTLayer(LazyBuild, keras.layers.Layer):
    """Pre-LN transformer layer: x + MHA(LN(x)); x + FF(LN(x)), FF = Linear(4E) -> GELU -> Linear(E)."""

    def __init__(self, embed_dim: int, num_head: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5)
        self.mha = ViTAttention(embed_dim, num_head)
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5)
        self.linear1, self.linear2 = vit_dense(4 * embed_dim), vit_dense(embed_dim)
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        x = x + self.dropout(self.mha(self.norm1(x)), training=training)
        ff = self.linear2(tf.nn.gelu(self.linear1(self.norm2(x)), approximate=False))
        return x + self.dropout(ff, training=training)


class VitEncoder(LazyBuild, keras.layers.Layer):
    """Minimal ViT: patch embedding, learned positional embedding, ``depth`` pre-LN layers, final LayerNorm.

    Input (B, C, H, W) in [0, 255] (normalised as x/255 - 0.5); output (B, num_patch, embed_dim), or
    (B, num_patch * embed_dim) with ``flatten``. "embed2": Conv k8 s4 -> [GroupNorm] -> ReLU -> Conv k3 s2
    (96x96 -> 11x11 = 121 tokens); "embed1": Conv k8 s8. The reference's ``cfg`` block may be given as a
    mapping (patch_size, depth, embed_dim, num_heads, embed_style, embed_norm); ``num_channel`` is inferred.
    """

    def __init__(self, obs_shape: Any = None, cfg: Mapping | None = None, num_channel: int = 3, img_h: int = 96,
                 img_w: int = 96, patch_size: int = 8, depth: int = 1, embed_dim: int = 128, num_heads: int = 4,
                 embed_style: str = "embed2", embed_norm: int | bool = 0, **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        c = dict(patch_size=patch_size, depth=depth, embed_dim=embed_dim, num_heads=num_heads,
                 embed_style=embed_style, embed_norm=embed_norm)
        c.update(dict(cfg or {}))
        self.num_channel, self.img_h, self.img_w = int(num_channel), int(img_h), int(img_w)
        e = int(c["embed_dim"])
        if c["embed_style"] == "embed2":
            self.patch_layers = [TorchConv2D(e, 8, strides=4)]
            if c["embed_norm"]:
                self.patch_layers.append(keras.layers.GroupNormalization(groups=e, epsilon=1e-5))
            self.patch_layers += [keras.layers.ReLU(), TorchConv2D(e, 3, strides=2)]
            h1, w1 = (self.img_h - 8) // 4 + 1, (self.img_w - 8) // 4 + 1
            hp, wp = (h1 - 3) // 2 + 1, (w1 - 3) // 2 + 1
        elif c["embed_style"] == "embed1":
            self.patch_layers = [TorchConv2D(e, 8, strides=8)]
            hp, wp = self.img_h // 8, self.img_w // 8
        else:
            raise ValueError(f"unknown ViT embed_style '{c['embed_style']}'; expected 'embed1' or 'embed2'")
        if hp < 1 or wp < 1:
            raise ValueError(f"images of {self.img_h}x{self.img_w} are too small for the ViT patch embedding")
        self.num_patch = hp * wp
        self.patch_repr_dim = e
        self.repr_dim = e * self.num_patch
        self.pos_embed = self.add_weight(shape=(1, self.num_patch, e), name="pos_embed",
                                         initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.blocks = [ViTLayer(e, int(c["num_heads"])) for _ in range(int(c["depth"]))]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5)

    def call(self, obs: tf.Tensor, flatten: bool = False, training: bool = False) -> tf.Tensor:
        x = tf.transpose(tf.cast(obs, tf.float32) / 255.0 - 0.5, (0, 2, 3, 1))  # (B, H, W, C)
        for layer in self.patch_layers:
            x = layer(x)
        b = tf.shape(x)[0]
        x = tf.reshape(x, (b, self.num_patch, self.patch_repr_dim)) + self.pos_embed  # tokens row-major (h, w)
        for block in self.blocks:
            x = block(x, training=training)
        x = self.norm(x)
        return tf.reshape(x, (b, self.repr_dim)) if flatten else x


class SpatialEmb(LazyBuild, keras.layers.Layer):
    """IBRL's token compression: per feature channel, Linear over [patch tokens, proprio] -> LN -> ReLU,
    then a learned weighted sum over channels: (B, num_patch, patch_dim), (B, prop) -> (B, proj_dim)."""

    def __init__(self, num_patch: int, patch_dim: int, prop_dim: int, proj_dim: int, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.patch_dim, self.prop_dim = patch_dim, prop_dim
        self.input_proj = Linear(proj_dim)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5)
        self.weight = self.add_weight(shape=(1, patch_dim, proj_dim), name="weight",
                                      initializer=keras.initializers.RandomNormal(stddev=1.0))
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, feat: tf.Tensor, prop: tf.Tensor, training: bool = False) -> tf.Tensor:
        feat = tf.transpose(feat, (0, 2, 1))  # (B, patch_dim, num_patch)
        if self.prop_dim > 0:
            rep = tf.repeat(prop[:, None, :], self.patch_dim, axis=1)
            feat = tf.concat([feat, rep], axis=-1)
        y = tf.nn.relu(self.norm(self.input_proj(feat)))
        return self.dropout(tf.reduce_sum(self.weight * y, axis=1), training=training)


def edge_pad(x: tf.Tensor, pad: int) -> tf.Tensor:
    """Replicate-pad the last two axes of (B, C, H, W) by ``pad`` (border rows/cols repeated)."""
    x = tf.concat([tf.repeat(x[:, :, :1], pad, axis=2), x, tf.repeat(x[:, :, -1:], pad, axis=2)], axis=2)
    return tf.concat([tf.repeat(x[..., :1], pad, axis=3), x, tf.repeat(x[..., -1:], pad, axis=3)], axis=3)


class RandomShiftsAug:
    """DrQ random shift: edge pad by ``pad``, then crop the original size at an independent
    integer offset (dx, dy) in [0, 2 pad] per image. Offset (pad, pad) is the identity."""

    def __init__(self, pad: int = 4, rng: tf.random.Generator | None = None, seed: int = 0):
        self.pad = int(pad)
        self.rng = rng if rng is not None else tf_stream(seed, "augment")

    def draw_offsets(self, batch: int | tf.Tensor) -> tf.Tensor:
        """(B, 2) int32 offsets [dx (width), dy (height)]."""
        return self.rng.uniform((batch, 2), 0, 2 * self.pad + 1, dtype=tf.int32)

    def shift(self, x: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        """out[b, :, i, j] = edge_pad(x)[b, :, i + dy_b, j + dx_b] for x (B, C, H, W)."""
        h, w = _dim(x, 2), _dim(x, 3)
        padded = tf.transpose(edge_pad(x, self.pad), (0, 2, 3, 1))  # (B, H+2p, W+2p, C)
        rows = offsets[:, 1:2] + tf.range(h)[None, :]
        cols = offsets[:, 0:1] + tf.range(w)[None, :]
        out = tf.gather(padded, rows, axis=1, batch_dims=1)
        out = tf.gather(out, cols, axis=2, batch_dims=1)
        return tf.transpose(out, (0, 3, 1, 2))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.shift(x, self.draw_offsets(tf.shape(x)[0]))


class VisionCondEncoder(LazyBuild, keras.layers.Layer):
    """concat[image features, flattened state] from cond {"state": (B, T_o, D_o), "rgb": (B, T, C, H, W)}.

    The last ``img_cond_steps`` frames are stacked on channels; with ``num_img`` = 2 cameras (C = 6) each
    camera's 3 channels are encoded separately by the shared backbone and compressed by its own SpatialEmb.
    ``spatial_emb`` > 0 selects SpatialEmb compression, else Linear + LayerNorm + Dropout + ReLU on the
    flattened tokens. ``augment`` applies RandomShiftsAug to every image in training calls only (the
    reference also shifts evaluation inputs when the flag is on; fine-tuning configs turn it off).
    Two-camera compressors are initialised independently (the reference deep-copies the first).
    """

    def __init__(self, backbone: keras.layers.Layer, cond_dim: int, img_cond_steps: int = 1, spatial_emb: int = 0,
                 visual_feature_dim: int = 128, dropout: float = 0.0, num_img: int = 1, augment: bool = False,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.cond_dim = backbone, cond_dim
        self.img_cond_steps, self.num_img = img_cond_steps, num_img
        self.augment = augment
        self.aug = RandomShiftsAug(pad=4, seed=seed) if augment else None
        self.spatial = spatial_emb > 0
        if self.spatial:
            if spatial_emb <= 1:
                raise ValueError(f"spatial_emb is the projection size; got {spatial_emb}")
            self.compress = [SpatialEmb(backbone.num_patch, backbone.patch_repr_dim, cond_dim, spatial_emb, dropout)
                             for _ in range(num_img)]
            self.feature_dim = spatial_emb * num_img
        else:
            if num_img > 1:
                raise ValueError("num_img > 1 needs spatial_emb > 0 (as in the reference)")
            self.compress_linear = Linear(visual_feature_dim)
            self.compress_norm = keras.layers.LayerNormalization(epsilon=1e-5)
            self.compress_drop = keras.layers.Dropout(dropout)
            self.feature_dim = visual_feature_dim
        self.out_dim = self.feature_dim + cond_dim

    @property
    def rgb_shape(self) -> tuple[int, int, int, int]:
        """Per-sample rgb shape (T_img, C, H, W) the encoder expects (for building with dummy inputs)."""
        per_frame = 3 * self.num_img if self.num_img > 1 else max(self.backbone.num_channel // self.img_cond_steps, 1)
        return (self.img_cond_steps, per_frame, self.backbone.img_h, self.backbone.img_w)

    def call(self, cond: Cond, training: bool = False, no_augment: bool = False) -> tf.Tensor:
        rgb = tf.cast(cond["rgb"][:, -self.img_cond_steps:], tf.float32)
        b = tf.shape(rgb)[0]
        t, c, h, w = (_dim(rgb, i) for i in (1, 2, 3, 4))
        state = tf.reshape(cond["state"], (b, self.cond_dim))
        if self.num_img > 1:  # (B, T, n*3, H, W) -> n images of (B, T*3, H, W)
            rgb = tf.transpose(tf.reshape(rgb, (b, t, self.num_img, 3, h, w)), (0, 2, 1, 3, 4, 5))
            images = [tf.reshape(rgb[:, i], (b, t * 3, h, w)) for i in range(self.num_img)]
        else:
            images = [tf.reshape(rgb, (b, t * c, h, w))]
        if self.aug is not None and training and not no_augment:
            images = [self.aug(img) for img in images]
        if self.spatial:
            feats = [comp(self.backbone(img, training=training), state, training=training)
                     for comp, img in zip(self.compress, images)]
            feat = tf.concat(feats, axis=-1) if len(feats) > 1 else feats[0]
        else:
            feat = self.backbone(images[0], flatten=True, training=training)
            feat = tf.nn.relu(self.compress_drop(self.compress_norm(self.compress_linear(feat)), training=training))
        return tf.concat([feat, state], axis=-1)
