"""Gaussian policy heads: ``Gaussian_MLP`` (state) and ``Gaussian_VisionMLP`` (pixels + proprio).

Both map ``cond`` to (mean, std), each (B, T_p * D_a). The std is one of
* fixed: ``fixed_std`` everywhere;
* learned fixed: a per-action-dim log-variance parameter (init log fixed_std^2), clamped to
  [log std_min^2, log std_max^2] and tiled over the horizon (``learn_fixed_std``); a pre-training checkpoint
  without it loads into the other weights (``optional_weights``);
* learned: a log-variance head (``fixed_std=None``), tanh-rescaled into the bounds for ``Gaussian_MLP``,
  clamped for ``Gaussian_VisionMLP``, as the reference does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from dppo.nets.mlp import MLP, LazyBuild, make_mlp
from dppo.nets.vit import VisionCondEncoder
from dppo.utils.cond import Cond


class GaussianStd:
    """The three std parameterisations shared by the Gaussian / GMM heads (mixin for Keras layers)."""

    def _init_std(self, fixed_std: float | None, learn_fixed_std: bool, std_min: float, std_max: float,
                  logvar_size: int) -> None:
        if learn_fixed_std and fixed_std is None:
            raise ValueError("learn_fixed_std=True needs fixed_std (the initial std)")
        self.fixed_std = fixed_std
        self.use_fixed_std = fixed_std is not None
        self.learn_fixed_std = bool(learn_fixed_std)
        self.logvar_min = 2.0 * math.log(std_min)
        self.logvar_max = 2.0 * math.log(std_max)
        self.logvar = None
        if self.learn_fixed_std:
            self.logvar = self.add_weight(shape=(logvar_size,), name="logvar",
                                          initializer=keras.initializers.Constant(2.0 * math.log(fixed_std)))

    def optional_weights(self) -> list:
        """Weights a checkpoint may lack (the reference's pre-trained heads have no learned fixed std)."""
        return [self.logvar] if self.logvar is not None else []

    def _learned_fixed_scale(self) -> tf.Tensor:
        return tf.exp(0.5 * tf.clip_by_value(self.logvar, self.logvar_min, self.logvar_max))

    def _rescaled_scale(self, raw: tf.Tensor) -> tf.Tensor:
        """std from a raw head output: log var = lv_min + (lv_max - lv_min)(tanh(raw) + 1)/2."""
        logvar = self.logvar_min + 0.5 * (self.logvar_max - self.logvar_min) * (tf.tanh(raw) + 1.0)
        return tf.exp(0.5 * logvar)

    def _clamped_scale(self, raw: tf.Tensor) -> tf.Tensor:
        return tf.exp(0.5 * tf.clip_by_value(raw, self.logvar_min, self.logvar_max))

    def _mean_scale(self, x: tf.Tensor, training: bool, scale_of_head) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean, std) of features ``x`` (B, F) through ``mlp_mean`` (tanh when ``tanh_output``) and the std
        parameterisation; ``scale_of_head`` turns the log-variance head's output into a std."""
        mean = self.mlp_mean(x, training=training)
        if self.tanh_output:
            mean = tf.tanh(mean)
        if self.learn_fixed_std:
            scale = tf.tile(self._learned_fixed_scale()[None, :], (tf.shape(x)[0], self.horizon_steps))
        elif self.use_fixed_std:
            scale = tf.fill(tf.shape(mean), tf.cast(self.fixed_std, mean.dtype))
        else:
            scale = scale_of_head(self.mlp_logvar(x, training=training))
        return mean, scale


class Gaussian_MLP(LazyBuild, GaussianStd, keras.layers.Layer):  # noqa: N801 (the reference's class name)
    """(Residual)MLP on the flattened state history -> (tanh) mean and std, each (B, T_p * D_a)."""

    def __init__(self, action_dim: int, horizon_steps: int, cond_dim: int, mlp_dims: Sequence[int] = (256, 256, 256),
                 activation_type: str = "Mish", tanh_output: bool = True, residual_style: bool = False,
                 use_layernorm: bool = False, dropout: float = 0.0, fixed_std: float | None = None,
                 learn_fixed_std: bool = False, std_min: float = 0.01, std_max: float = 1.0, **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        self.action_dim, self.horizon_steps, self.cond_dim = action_dim, horizon_steps, cond_dim
        self.tanh_output = tanh_output
        out_dim = action_dim * horizon_steps
        mlp_dims = list(mlp_dims)
        self._init_std(fixed_std, learn_fixed_std, std_min, std_max, action_dim)
        if fixed_std is None:  # shared trunk, separate mean and log-variance heads
            self.mlp_base = make_mlp([cond_dim, *mlp_dims], residual_style, activation_type=activation_type,
                                     out_activation_type=activation_type, use_layernorm=use_layernorm,
                                     use_layernorm_final=use_layernorm, dropout=dropout)
            self.mlp_mean = MLP([mlp_dims[-1], out_dim], out_activation_type="Identity")
            self.mlp_logvar = MLP([mlp_dims[-1], out_dim], out_activation_type="Identity")
        else:
            self.mlp_base = None
            self.mlp_mean = make_mlp([cond_dim, *mlp_dims, out_dim], residual_style, activation_type=activation_type,
                                     out_activation_type="Identity", use_layernorm=use_layernorm, dropout=dropout)
            self.mlp_logvar = None

    def call(self, cond: Cond, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        state = cond["state"]
        b = tf.shape(state)[0]
        x = tf.reshape(state, (b, self.cond_dim))
        if self.mlp_base is not None:
            x = self.mlp_base(x, training=training)
        return self._mean_scale(x, training, self._rescaled_scale)


class Gaussian_VisionMLP(LazyBuild, GaussianStd, keras.layers.Layer):  # noqa: N801
    """ViT (+ SpatialEmb or Linear compression) features and proprio -> tanh mean and std."""

    def __init__(self, backbone: keras.layers.Layer, action_dim: int, horizon_steps: int, cond_dim: int,
                 img_cond_steps: int = 1, mlp_dims: Sequence[int] = (256, 256, 256), activation_type: str = "Mish",
                 residual_style: bool = False, use_layernorm: bool = False, fixed_std: float | None = None,
                 learn_fixed_std: bool = False, std_min: float = 0.01, std_max: float = 1.0, spatial_emb: int = 0,
                 visual_feature_dim: int = 128, dropout: float = 0.0, num_img: int = 1, augment: bool = False,
                 tanh_output: bool = True, seed: int = 0, **kwargs):
        kwargs.pop("device", None)
        super().__init__(**kwargs)
        self.action_dim, self.horizon_steps, self.cond_dim = action_dim, horizon_steps, cond_dim
        self.tanh_output = tanh_output
        self.encoder = VisionCondEncoder(backbone, cond_dim, img_cond_steps=img_cond_steps, spatial_emb=spatial_emb,
                                         visual_feature_dim=visual_feature_dim, dropout=dropout, num_img=num_img,
                                         augment=augment, seed=seed)
        in_dim, out_dim = self.encoder.out_dim, action_dim * horizon_steps
        mlp_dims = list(mlp_dims)
        self._init_std(fixed_std, learn_fixed_std, std_min, std_max, action_dim)
        self.mlp_mean = make_mlp([in_dim, *mlp_dims, out_dim], residual_style, activation_type=activation_type,
                                 out_activation_type="Identity", use_layernorm=use_layernorm)
        self.mlp_logvar = (MLP([in_dim, mlp_dims[-1], out_dim], activation_type=activation_type,
                               out_activation_type="Identity", use_layernorm=use_layernorm)
                           if fixed_std is None else None)

    @property
    def rgb_shape(self) -> tuple[int, int, int, int]:
        return self.encoder.rgb_shape

    def call(self, cond: Cond, training: bool = False, no_augment: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        return self._mean_scale(self.encoder(cond, training=training, no_augment=no_augment), training,
                                self._clamped_scale)
