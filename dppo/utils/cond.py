"""What a network or policy is conditioned on: a dict of named observation tensors, ``{"state": (B, T_o, D_o)}``
and, for pixel policies, ``"rgb": (B, T_o, C, H, W)``; and the row selection of such a dict."""

from __future__ import annotations

import tensorflow as tf

Cond = dict[str, tf.Tensor]


def gather_cond(cond: Cond, idx: tf.Tensor) -> Cond:
    """Rows ``idx`` of every tensor of ``cond`` (``tf.gather`` on the batch axis)."""
    return {k: tf.gather(v, idx) for k, v in cond.items()}
