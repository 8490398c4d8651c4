"""The few distributions the policies need, as pure TensorFlow functions (no tensorflow-probability).

Shapes: a diagonal Normal is given by ``mean`` and ``std`` of the same shape; a GMM by ``means``/``stds``
(B, M, D) and mixture ``logits`` (B, M), each component an independent Normal over the D dims. All
functions are graph-safe (usable inside ``tf.function``); sampling takes an explicit ``tf.random.Generator``.
"""

from __future__ import annotations

import math

import tensorflow as tf

LOG_2PI = math.log(2.0 * math.pi)
TANH_EPS = 1e-6  # the reference's correction constant in log(1 - tanh(u)^2 + eps)


# diagonal Normal -----------------------------------------------------------------------------------------
def normal_log_prob(x: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    """Elementwise log N(x; mean, std^2)."""
    return -0.5 * tf.square((x - mean) / std) - tf.math.log(std) - 0.5 * LOG_2PI


def normal_entropy(std: tf.Tensor) -> tf.Tensor:
    """Elementwise entropy of N(., std^2): 1/2 + 1/2 log(2 pi) + log std."""
    return 0.5 + 0.5 * LOG_2PI + tf.math.log(std)


def normal_sample(rng: tf.random.Generator, mean: tf.Tensor, std: tf.Tensor,
                  randn_clip_value: float | None = None) -> tf.Tensor:
    """mean + std * z with z ~ N(0, I) clamped to +-randn_clip_value (so the draw stays in mean +- clip*std)."""
    z = rng.normal(tf.shape(mean), dtype=mean.dtype)
    if randn_clip_value is not None:
        z = tf.clip_by_value(z, -randn_clip_value, randn_clip_value)
    return mean + std * z


# tanh-squashed Normal (SAC-style policies) ------------------------------------------------------
def tanh_normal_log_prob(u: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    """log pi(tanh(u)) summed over the last axis for the pre-squash draw ``u`` ~ N(mean, std^2):
    sum_d [log N(u_d) - log(1 - tanh(u_d)^2 + 1e-6)] (the reference's correction, with its epsilon)."""
    a = tf.tanh(u)
    return tf.reduce_sum(normal_log_prob(u, mean, std) - tf.math.log(1.0 - tf.square(a) + TANH_EPS), axis=-1)


def tanh_normal_sample(rng: tf.random.Generator, mean: tf.Tensor, std: tf.Tensor,
                       randn_clip_value: float | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Reparameterised draw a = tanh(u), u = mean + std * z, and its log-prob (summed over the last axis).
    Gradients flow to ``mean`` and ``std``."""
    u = normal_sample(rng, mean, std, randn_clip_value)
    return tf.tanh(u), tanh_normal_log_prob(u, mean, std)


# categorical / Gaussian mixture --------------------------------------------------------------------------
def categorical_sample(rng: tf.random.Generator, logits: tf.Tensor) -> tf.Tensor:
    """One index per row of ``logits`` (B, M) by the Gumbel-max trick: (B,) int32."""
    u = rng.uniform(tf.shape(logits), minval=1e-20, maxval=1.0, dtype=logits.dtype)
    return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)


def gmm_component_log_prob(x: tf.Tensor, means: tf.Tensor, stds: tf.Tensor) -> tf.Tensor:
    """log N(x; means_m, diag stds_m^2) of every component: x (B, D), means/stds (B, M, D) -> (B, M)."""
    return tf.reduce_sum(normal_log_prob(x[:, None, :], means, stds), axis=-1)


def gmm_log_prob(x: tf.Tensor, means: tf.Tensor, stds: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Joint mixture log-density log sum_m softmax(logits)_m N(x; means_m, stds_m): (B,)."""
    log_w = tf.nn.log_softmax(logits, axis=-1)
    return tf.reduce_logsumexp(log_w + gmm_component_log_prob(x, means, stds), axis=-1)


def gmm_entropy(stds: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The reference's "approximate entropy": the weight-averaged entropy of the components (B,),
    sum_m softmax(logits)_m sum_d H(N(., stds_md^2)) (an upper bound is H(w) + this; not used)."""
    w = tf.nn.softmax(logits, axis=-1)
    return tf.reduce_sum(w * tf.reduce_sum(normal_entropy(stds), axis=-1), axis=-1)


def gmm_mean_std(stds: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """The reference's reported "std": sum_m w_m mean_d stds_md, (B,)."""
    return tf.reduce_sum(tf.nn.softmax(logits, axis=-1) * tf.reduce_mean(stds, axis=-1), axis=-1)


def gmm_sample(rng: tf.random.Generator, means: tf.Tensor, stds: tf.Tensor, logits: tf.Tensor,
               randn_clip_value: float | None = None) -> tf.Tensor:
    """Draw a mode m ~ Categorical(logits), then x ~ N(means_m, stds_m^2) (z clamped if asked): (B, D)."""
    mode = categorical_sample(rng, logits)
    mean = tf.gather(means, mode, batch_dims=1)
    std = tf.gather(stds, mode, batch_dims=1)
    return normal_sample(rng, mean, std, randn_clip_value)
