"""Sample-based differential entropy in TensorFlow: the Kozachenko-Leonenko nearest-neighbour estimator.

For N samples x_1..x_N of a density in R^D, with eps_i the Euclidean distance from x_i to its k-th nearest other
sample and V_D = pi^(D/2) / Gamma(D/2 + 1) the volume of the unit D-ball,

    H_hat = psi(N) - psi(k) + log V_D + (D / N) sum_i log eps_i      (nats).

It is consistent for any density (no mixture or Gaussian assumption), and scaling the samples by c moves it by
exactly D log c, so it follows the spread of a policy whatever the sample size. With few samples in many
dimensions it is biased (the bias depends on N, k and the shape of the density, not on its scale).
"""

from __future__ import annotations

import math

import tensorflow as tf


def knn_entropy(x: tf.Tensor, k: int = 3, min_distance: float = 1e-12) -> tf.Tensor:
    """Entropy estimate of each set of samples: ``x`` (S, N, D) -> (S,) nats. ``k`` < N; distances below
    ``min_distance`` (duplicate samples) are raised to it."""
    x = tf.convert_to_tensor(x, tf.float32)
    n, d = tf.shape(x)[1], tf.shape(x)[2]
    diff = x[:, :, None, :] - x[:, None, :, :]  # (S, N, N, D): exact differences, no |a|^2 + |b|^2 - 2ab loss
    dist2 = tf.reduce_sum(tf.square(diff), axis=-1)
    dist2 += tf.linalg.diag(tf.fill(tf.shape(dist2)[:2], float("inf")))  # not its own neighbour
    kth = -tf.math.top_k(-dist2, k=k).values[..., k - 1]  # (S, N) squared distance to the k-th neighbour
    log_eps = 0.5 * tf.math.log(tf.maximum(kth, min_distance ** 2))
    nf, df = tf.cast(n, tf.float32), tf.cast(d, tf.float32)
    log_unit_ball = 0.5 * df * math.log(math.pi) - tf.math.lgamma(0.5 * df + 1.0)
    return (tf.math.digamma(nf) - tf.math.digamma(float(k)) + log_unit_ball
            + df * tf.reduce_mean(log_eps, axis=-1))


def gaussian_entropy(cov_logdet: float, dim: int) -> float:
    """Closed-form entropy of a D-dimensional Gaussian with log det(covariance) ``cov_logdet``."""
    return 0.5 * dim * (1.0 + math.log(2.0 * math.pi)) + 0.5 * cov_logdet
