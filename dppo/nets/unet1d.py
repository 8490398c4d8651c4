"""Unet1D: the Diffusion-Policy temporal U-Net over the action chunk, FiLM-conditioned on
[time embedding, state]. Channels-last throughout: x (B, T_p, D_a) is already (batch, length, channels).

Convolutions pad explicitly as PyTorch does (Conv1d k, padding k//2; downsample Conv1d k3 s2 p1;
upsample ConvTranspose1d k4 s2 p1 = full transposed conv cropped by 1 on each side, so lengths double)
and use PyTorch's default init.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from dppo.nets.embeddings import SinusoidalPosEmb
from dppo.nets.mlp import LazyBuild, Linear, ResidualMLP, activation, mish
from dppo.utils.cond import Cond


def _torch_uniform(fan_in: int) -> keras.initializers.Initializer:
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


class Conv1d(keras.layers.Conv1D):
    """torch.nn.Conv1d(in, out, k, stride, padding) on channels-last input (B, L, C), PyTorch init."""

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, padding: int = 0, **kwargs):
        super().__init__(filters, kernel_size, strides=stride, padding="valid", **kwargs)
        self.torch_padding = padding

    def build(self, input_shape):
        init = _torch_uniform(int(input_shape[-1]) * self.kernel_size[0])
        self.kernel_initializer, self.bias_initializer = init, init
        super().build(self._padded_shape(input_shape))

    def _padded_shape(self, input_shape):
        length, p = input_shape[-2], self.torch_padding
        return (*input_shape[:-2], None if length is None else length + 2 * p, input_shape[-1])

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(self._padded_shape(input_shape))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        p = self.torch_padding
        return super().call(tf.pad(x, [[0, 0], [p, p], [0, 0]]) if p else x)


class ConvTranspose1d(LazyBuild, keras.layers.Layer):
    """torch.nn.ConvTranspose1d(in, out, k, stride, padding): output length (L-1) stride - 2 padding + k."""

    def __init__(self, filters: int, kernel_size: int = 4, stride: int = 2, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.stride, self.padding = filters, kernel_size, stride, padding
        init = _torch_uniform(filters * kernel_size)  # torch's fan_in of a transposed conv weight (in, out, k)
        self.conv = keras.layers.Conv1DTranspose(filters, kernel_size, strides=stride, padding="valid",
                                                 kernel_initializer=init, bias_initializer=init)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        y = self.conv(x)  # full length (L-1) stride + k
        if self.padding:
            y = y[:, self.padding:-self.padding]
        return y


class GroupNorm1d(keras.layers.Layer):
    """torch.nn.GroupNorm on channels-last (B, L, C): statistics over (channels of a group, length), then a
    per-channel affine. A lean graph (a few ops) in place of keras.layers.GroupNormalization."""

    def __init__(self, groups: int, eps: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.eps = groups, eps

    def build(self, input_shape):
        c = int(input_shape[-1])
        if c % self.groups:
            raise ValueError(f"GroupNorm: {c} channels are not divisible into n_groups={self.groups}")
        self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        c = x.shape[-1]
        g = tf.reshape(x, (-1, _length(x), self.groups, c // self.groups))
        mean, var = tf.nn.moments(g, axes=[1, 3], keepdims=True)
        g = (g - mean) * tf.math.rsqrt(var + self.eps)
        return tf.reshape(g, tf.shape(x)) * self.gamma + self.beta


def _length(x: tf.Tensor) -> int | tf.Tensor:
    return x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]


class Conv1dBlock(LazyBuild, keras.layers.Layer):
    """Conv1d(k, padding k//2) -> GroupNorm(n_groups) over (channels in group, length) -> activation."""

    def __init__(self, out_channels: int, kernel_size: int, n_groups: int | None = None,
                 activation_type: str = "Mish", eps: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.conv = Conv1d(out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = GroupNorm1d(n_groups, eps) if n_groups else None
        self.act = mish if activation_type == "Mish" else tf.nn.relu

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x)


class ResidualBlock1D(LazyBuild, keras.layers.Layer):
    """Two Conv1dBlocks with FiLM from the global condition in between, plus a (1x1 conv) skip."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, n_groups: int | None = None,
                 cond_predict_scale: bool = False, larger_encoder: bool = False, activation_type: str = "Mish",
                 groupnorm_eps: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        kw = dict(n_groups=n_groups, activation_type=activation_type, eps=groupnorm_eps)
        self.block1 = Conv1dBlock(out_channels, kernel_size, **kw)
        self.block2 = Conv1dBlock(out_channels, kernel_size, **kw)
        self.act = mish if activation_type == "Mish" else tf.nn.relu
        self.out_channels, self.cond_predict_scale = out_channels, cond_predict_scale
        cond_channels = 2 * out_channels if cond_predict_scale else out_channels
        self.larger_encoder = larger_encoder
        if larger_encoder:  # Linear - act - Linear - act - Linear
            self.cond_encoder = [Linear(cond_channels), Linear(cond_channels), Linear(cond_channels)]
        else:  # act - Linear
            self.cond_encoder = [Linear(cond_channels)]
        self.residual_conv = Conv1d(out_channels, 1) if in_channels != out_channels else None

    def encode_cond(self, g: tf.Tensor) -> tf.Tensor:
        if self.larger_encoder:
            l1, l2, l3 = self.cond_encoder
            return l3(self.act(l2(self.act(l1(g)))))
        return self.cond_encoder[0](self.act(g))

    def call(self, x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        out = self.block1(x)
        embed = self.encode_cond(g)[:, None, :]  # (B, 1, C') broadcast over the length
        if self.cond_predict_scale:
            scale, bias = embed[..., :self.out_channels], embed[..., self.out_channels:]
            out = scale * out + bias
        else:
            out = out + embed
        out = self.block2(out)
        return out + (self.residual_conv(x) if self.residual_conv is not None else x)


class Unet1D(LazyBuild, keras.layers.Layer):
    """eps_theta(x (B, T_p, D_a), t (B,), cond {"state": (B, T_o, D_o)}) -> (B, T_p, D_a).

    T_p must be divisible by 2^(len(dim_mults) - 1). ``horizon_steps`` is accepted for config symmetry.
    """

    def __init__(self, action_dim: int, cond_dim: int, diffusion_step_embed_dim: int = 32, dim: int = 32,
                 dim_mults: Sequence[int] = (1, 2, 4, 8), smaller_encoder: bool = False,
                 cond_mlp_dims: Sequence[int] | None = None, kernel_size: int = 5, n_groups: int | None = None,
                 activation_type: str = "Mish", cond_predict_scale: bool = False, groupnorm_eps: float = 1e-5,
                 horizon_steps: int | None = None, **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        activation(activation_type)  # validates the name
        self.action_dim, self.cond_dim, self.horizon_steps = action_dim, cond_dim, horizon_steps
        self.n_levels = len(dim_mults)
        dims = [action_dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        dsed = diffusion_step_embed_dim
        self.time_emb = SinusoidalPosEmb(dsed)
        self.time_l1, self.time_l2 = Linear(4 * dsed), Linear(dsed)
        self.cond_mlp = (ResidualMLP([cond_dim, *cond_mlp_dims], activation_type=activation_type,
                                     out_activation_type="Identity") if cond_mlp_dims else None)
        kw = dict(kernel_size=kernel_size, n_groups=n_groups, cond_predict_scale=cond_predict_scale,
                  larger_encoder=cond_mlp_dims is None and not smaller_encoder, activation_type=activation_type,
                  groupnorm_eps=groupnorm_eps)
        mid = dims[-1]
        self.mid_modules = [ResidualBlock1D(mid, mid, **kw), ResidualBlock1D(mid, mid, **kw)]
        self.down_modules = []
        for i, (d_in, d_out) in enumerate(in_out):
            last = i >= len(in_out) - 1
            self.down_modules.append([ResidualBlock1D(d_in, d_out, **kw), ResidualBlock1D(d_out, d_out, **kw),
                                      None if last else Conv1d(d_out, 3, stride=2, padding=1)])
        self.up_modules = []
        for d_in, d_out in reversed(in_out[1:]):  # every up level upsamples (the reference's is_last never fires)
            self.up_modules.append([ResidualBlock1D(2 * d_out, d_in, **kw), ResidualBlock1D(d_in, d_in, **kw),
                                    ConvTranspose1d(d_in, 4, 2, 1)])
        self.final_block = Conv1dBlock(dim, kernel_size, n_groups=n_groups, activation_type=activation_type,
                                       eps=groupnorm_eps)
        self.final_conv = Conv1d(action_dim, 1)

    def call(self, x: tf.Tensor, t: tf.Tensor, cond: Cond, training: bool = False) -> tf.Tensor:
        length = x.shape[1]
        factor = 2 ** (self.n_levels - 1)
        if length is not None and length % factor:
            raise ValueError(f"Unet1D with {self.n_levels} levels (dim_mults) needs horizon_steps divisible by "
                             f"{factor}; got {length}")
        b = tf.shape(x)[0]
        state = tf.reshape(cond["state"], (b, self.cond_dim))
        if self.cond_mlp is not None:
            state = self.cond_mlp(state, training=training)
        g = tf.concat([self.time_l2(mish(self.time_l1(self.time_emb(t)))), state], axis=-1)
        skips = []
        for res1, res2, down in self.down_modules:
            x = res2(res1(x, g), g)
            skips.append(x)
            if down is not None:
                x = down(x)
        for block in self.mid_modules:
            x = block(x, g)
        for res1, res2, up in self.up_modules:
            x = tf.concat([x, skips.pop()], axis=-1)
            x = up(res2(res1(x, g), g))
        return self.final_conv(self.final_block(x))
