"""Data-parallel PPO updates and pre-training with ``tf.distribute.MirroredStrategy`` (opt-in: ``train.distribute``).

``train.distribute`` is null (the default: one device, the code paths are those of a build without this module),
``mirrored`` (``MirroredStrategy()``: every visible GPU, else the CPU), or a list of device names
(``["/gpu:0", "/gpu:1"]``; ``["/cpu:0", "/cpu:1"]`` after splitting the CPU into logical devices, which is how the
tests run it).

What is distributed: only the gradient computation of each minibatch. The runner builds the networks and the
optimizers inside ``strategy.scope()`` (so their variables are mirrored, one copy per device); sampling, scoring
and the old log-probs run as before on the first device's copy (reading a mirrored variable outside a replica
gives that copy). Per minibatch:

1. everything that depends on the whole minibatch is computed once, in cross-replica context: PPO's advantage
   normalisation and quantile clipping (over the minibatch's env steps, as the one-device loss does), and the
   diffusion pre-training loss's random timesteps and noise (drawn from the same stream in the same order);
2. each replica takes its contiguous share of the rows, computes the unchanged loss (``PPOLearner.rows_gradients``,
   ``model.loss``) on it and its gradients, weighted by its share of the rows;
3. the weighted losses, terms and gradients are summed across replicas (= the minibatch means), and the optimizer
   steps once, with the fused kernel on every device's copy (``dppo.utils.optim.AdamW``).

So for the same global batch the losses and updates equal the one-device ones up to float summation order
(``tests/test_distributed.py``: 2 logical CPU devices). Not covered: randomness inside a network's forward pass
(dropout, image augmentation), whose per-replica streams differ from the one-device stream.
"""

from __future__ import annotations

import contextlib
from typing import Any

import tensorflow as tf

from dppo.algos.ppo import PPOBatch, PPOLearner, prepare_advantages, splits_exactly

SUM = tf.distribute.ReduceOp.SUM


def make_strategy(spec: Any) -> tf.distribute.Strategy | None:
    """``train.distribute`` -> a MirroredStrategy, or None for the one-device path."""
    if spec is None or spec is False or spec == "none":
        return None
    if spec == "mirrored" or spec is True:
        return tf.distribute.MirroredStrategy()
    if isinstance(spec, str):
        raise ValueError(f"train.distribute must be null, 'mirrored' or a list of devices, got '{spec}'")
    devices = [str(d) for d in spec]
    if len(devices) < 1:
        raise ValueError("train.distribute: the device list is empty")
    return tf.distribute.MirroredStrategy(devices)


def scope(strategy: tf.distribute.Strategy | None):
    """``strategy.scope()``, or a no-op context for the one-device path."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def replica_rows(n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """In replica context: this replica's contiguous rows [start, end) of n, and its weight (end - start) / n."""
    ctx = tf.distribute.get_replica_context()
    r, i = ctx.num_replicas_in_sync, tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    start, end = (i * n) // r, ((i + 1) * n) // r
    return start, end, tf.cast(end - start, tf.float32) / tf.cast(n, tf.float32)


def weighted(weight: tf.Tensor, value: Any) -> Any:
    """``value`` (a nest of tensors) x ``weight``, as 0 where the weight is 0 (an empty share's mean is NaN)."""
    return tf.nest.map_structure(lambda x: tf.math.multiply_no_nan(x, tf.cast(weight, x.dtype)), value)


class MirroredPPOLearner(PPOLearner):
    """``PPOLearner`` whose minibatch gradients are computed data-parallel by ``strategy`` (see the module
    docstring). Build the policy and the optimizers inside ``strategy.scope()``; this learner itself may be built
    outside it (its minibatch-order generator runs in cross-replica context)."""

    def __init__(self, strategy: tf.distribute.Strategy, *args: Any, **kwargs: Any):
        self.strategy = strategy
        super().__init__(*args, **kwargs)
        if self.micro_batch:  # this learner's minibatch_gradients splits rows across replicas, not in chunks
            raise ValueError("train.micro_batch is not supported with train.distribute (each replica already "
                             "computes only its share of the minibatch); set one of them to null")
        if not splits_exactly(self.policy):
            raise ValueError(f"train.distribute: the extra_loss of {type(self.policy).__name__} is not a mean over the "
                             "minibatch's rows, so replicas cannot split it; run this method on one device")

    def update(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with self.strategy.scope():
            return super().update(*args, **kwargs)

    def minibatch_gradients(self, batch: PPOBatch, i: tf.Tensor, vars_: list, vf_coef, ent_coef):
        n = tf.size(i)
        adv = prepare_advantages(self.policy, tf.gather(batch.advantages, i))  # over the whole minibatch

        def replica(i, adv):
            start, end, w = replica_rows(n)
            return weighted(w, self.rows_gradients(batch, i[start:end], adv[start:end], vars_, vf_coef, ent_coef,
                                                   adv_prepared=True))

        loss, terms, grads = self.strategy.reduce(SUM, self.strategy.run(replica, args=(i, adv)), axis=None)
        return loss, terms, list(grads)


def pretrain_gradients(strategy: tf.distribute.Strategy, model: Any, variables: list, actions: tf.Tensor,
                       cond: dict[str, tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Pre-training loss and gradients of one batch, data-parallel: a model with ``loss_noise`` (diffusion) draws
    its timesteps and noise for the whole batch first, so each replica's share is the one-device batch's."""
    n = tf.shape(actions)[0]
    drawn = model.loss_noise(actions) if hasattr(model, "loss_noise") else {}

    def replica(actions, cond, drawn):
        start, end, w = replica_rows(n)
        part = tf.nest.map_structure(lambda x: x[start:end], (actions, cond, drawn))
        with tf.GradientTape() as tape:
            loss = model.loss(part[0], part[1], **part[2])
        grads = tape.gradient(loss, variables)
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
        return weighted(w, (loss, grads))

    loss, grads = strategy.reduce(SUM, strategy.run(replica, args=(actions, cond, drawn)), axis=None)
    return loss, list(grads)
