"""Sinusoidal time embedding of the denoising step (the reference's SinusoidalPosEmb)."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf


def sinusoidal_embedding(t: tf.Tensor, dim: int) -> tf.Tensor:
    """[sin(t w_j), cos(t w_j)] with w_j = exp(-j ln(10000) / (half - 1)), j < half = dim // 2."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / (half - 1)).astype(np.float32)
    arg = tf.cast(tf.reshape(t, (-1, 1)), tf.float32) * freqs[None, :]
    return tf.concat([tf.sin(arg), tf.cos(arg)], axis=-1)


class SinusoidalPosEmb(keras.layers.Layer):
    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim

    def call(self, t: tf.Tensor) -> tf.Tensor:
        return sinusoidal_embedding(t, self.dim)
