"""MLP building blocks: activations by name, PyTorch-style init, MLP and ResidualMLP."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf


def mish(x: tf.Tensor) -> tf.Tensor:
    return x * tf.tanh(tf.math.softplus(x))


ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "ReLU": tf.nn.relu,
    "ELU": tf.nn.elu,
    "GELU": lambda x: tf.nn.gelu(x, approximate=False),
    "Tanh": tf.tanh,
    "Mish": mish,
    "Identity": tf.identity,
    "Softplus": tf.math.softplus,
}


def activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """Activation function by the reference's name (ReLU, ELU, GELU, Tanh, Mish, Identity, Softplus)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation_type '{name}'; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class LazyBuild:
    """Mixin for composite layers: build children on the first real call instead of letting Keras 3 trace
    ``call`` symbolically to build them (that trace repeats at every nesting level and made the first call
    of a U-Net ~6x slower than the call itself)."""

    def build(self, input_shape=None) -> None:
        pass


def output_dtype() -> str | None:
    """dtype of a network's last layer: float32 under a mixed precision policy (``mixed_precision`` in
    :mod:`dppo.utils.precision`: the hidden layers compute in bfloat16, what leaves the network and all the
    distribution math stay float32), else None (the global policy)."""
    return "float32" if keras.mixed_precision.global_policy().compute_dtype != "float32" else None


class Linear(keras.layers.Dense):
    """Dense layer with PyTorch's default init: weights and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""

    def build(self, input_shape):
        bound = 1.0 / math.sqrt(int(input_shape[-1]))
        self.kernel_initializer = keras.initializers.RandomUniform(-bound, bound)
        self.bias_initializer = keras.initializers.RandomUniform(-bound, bound)
        super().build(input_shape)


class MLP(keras.layers.Layer):
    """Linear -> [LayerNorm] -> [Dropout] -> activation for each consecutive pair of ``dim_list``."""

    def __init__(self, dim_list: Sequence[int], activation_type: str = "Tanh",
                 out_activation_type: str = "Identity", use_layernorm: bool = False,
                 use_layernorm_final: bool = False, dropout: float = 0.0, use_drop_final: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        n = len(dim_list) - 1
        self.blocks = []
        for i in range(n):
            last = i == n - 1
            norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=output_dtype() if last else None) if (
                (use_layernorm and not last) or (last and use_layernorm_final)) else None
            drop = keras.layers.Dropout(dropout) if dropout > 0 and (not last or use_drop_final) else None
            act = activation(out_activation_type if last else activation_type)
            self.blocks.append((Linear(dim_list[i + 1], dtype=output_dtype() if last else None), norm, drop, act))
        self._layers_list = [layer for blk in self.blocks for layer in blk[:3] if layer is not None]

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        for linear, norm, drop, act in self.blocks:
            x = linear(x)
            if norm is not None:
                x = norm(x)
            if drop is not None:
                x = drop(x, training=training)
            x = act(x)
        return x


class TwoLayerPreActivationResNetLinear(keras.layers.Layer):
    """Block(x) = x + L2(act(LN2(L1(act(LN1(x))))))."""

    def __init__(self, hidden_dim: int, activation_type: str, use_layernorm: bool, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.l1, self.l2 = Linear(hidden_dim), Linear(hidden_dim)
        self.act = activation(activation_type)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-6) if use_layernorm else None
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-6) if use_layernorm else None
        self.drop = keras.layers.Dropout(dropout) if dropout > 0 else None

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = x
        if self.norm1 is not None:
            h = self.norm1(h)
        h = self.l1(self.act(h))
        if self.norm2 is not None:
            h = self.norm2(h)
        h = self.l2(self.act(h))
        if self.drop is not None:
            h = self.drop(h, training=training)
        return x + h


class ResidualMLP(keras.layers.Layer):
    """Linear(in->h), (len(dim_list)-3)/2 pre-activation residual blocks, Linear(h->out), output activation."""

    def __init__(self, dim_list: Sequence[int], activation_type: str = "Mish",
                 out_activation_type: str = "Identity", use_layernorm: bool = False,
                 use_layernorm_final: bool = False, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if (len(dim_list) - 3) % 2 != 0:
            raise ValueError(f"ResidualMLP needs an odd number of hidden layers; got dims {list(dim_list)}")
        hidden = dim_list[1]
        self.first = Linear(hidden)
        self.blocks = [TwoLayerPreActivationResNetLinear(hidden, activation_type, use_layernorm, dropout)
                       for _ in range((len(dim_list) - 3) // 2)]
        self.last = Linear(dim_list[-1], dtype=output_dtype())
        self.final_norm = (keras.layers.LayerNormalization(epsilon=1e-5, dtype=output_dtype())
                           if use_layernorm_final else None)
        self.out_act = activation(out_activation_type)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        x = self.first(x)
        for block in self.blocks:
            x = block(x, training=training)
        x = self.last(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.out_act(x)


def make_mlp(dim_list: Sequence[int], residual_style: bool, **kwargs) -> keras.layers.Layer:
    """MLP or ResidualMLP, as the reference's ``residual_style`` flag chooses."""
    return ResidualMLP(dim_list, **kwargs) if residual_style else MLP(dim_list, **kwargs)
