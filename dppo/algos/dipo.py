"""DIPO (diffusion policy with action gradient): improve the stored actions by gradient ascent on Q, write them
back to the replay buffer, and regress the diffusion policy onto them.

Per update (one compiled step of :meth:`DIPODiffusion.train_step`):

* critic: on a minibatch, y = r + gamma (1 - terminated) min(Q1', Q2')(s', a'), a' sampled (stochastically) by
  the EMA **target actor**; loss mean((Q1 - y)^2) + mean((Q2 - y)^2);
* after the critic warm-up, on a fresh minibatch: the "action gradient" - the stored chunks a (B, T_a * D_a)
  take ``action_gradient_steps`` Adam steps (lr ``action_lr``, betas (0.9, 0.999), eps 1e-5, a fresh optimizer
  state per minibatch) on -sum_b min(Q1, Q2)(s_b, a_b) with the current critic, the gradient's global L2 norm
  clipped to 0.1 * D_a * T_a and a clamped to [-1, 1] after each step; the improved chunks replace the stored
  ones in the buffer, and the actor takes one step on the plain diffusion loss of the improved chunks;
* Polyak averaging (``target_ema_rate``) of the target critic and the target actor after every update.

Rollouts sample with the target actor, which is therefore also what the stand-alone policy file holds.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dppo.algos.replay_common import ReplayDiffusionModel, copy_weights, polyak_update, target_network

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-5


def action_gradient(critic: keras.layers.Layer, cond: dict[str, tf.Tensor], actions: tf.Tensor, steps: int,
                    lr: float, max_norm: float) -> tf.Tensor:
    """``steps`` Adam steps on the chunks ``actions`` (B, T, D) maximising sum_b min(Q1, Q2); the gradient's
    global norm is clipped to ``max_norm`` before each step and the chunks are clamped to [-1, 1] after it."""
    b1, b2 = ADAM_BETAS
    a = tf.identity(actions)
    m = tf.zeros_like(a)
    v = tf.zeros_like(a)
    for k in range(1, steps + 1):
        with tf.GradientTape() as tape:
            tape.watch(a)
            q1, q2 = critic(cond, a)
            loss = -tf.reduce_sum(tf.minimum(q1, q2))
        g = tape.gradient(loss, a)
        g = tf.clip_by_norm(g, max_norm)  # one tensor: its global norm
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * tf.square(g)
        m_hat, v_hat = m / (1.0 - b1**k), v / (1.0 - b2**k)
        a = tf.clip_by_value(a - lr * m_hat / (tf.sqrt(v_hat) + ADAM_EPS), -1.0, 1.0)
    return tf.stop_gradient(a)


class DIPODiffusion(ReplayDiffusionModel):
    """Actor (trained), EMA target actor (acts and gives next actions), double-Q critic and its target."""

    buffer_writes = ("actions",)

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer,
                 actor_target: keras.layers.Layer | None = None, target_ema_rate: float = 0.005,
                 action_lr: float = 1e-4, action_gradient_steps: int = 10, **kwargs: Any):
        self.actor_target = target_network(actor_target, actor)
        super().__init__(actor, critic, **kwargs)
        self.build_network(self.actor_target)
        copy_weights(self.actor_target, self.network)
        self.tau = float(target_ema_rate)
        self.action_lr = float(action_lr)
        self.action_gradient_steps = int(action_gradient_steps)
        self.action_grad_norm = 0.1 * self.action_dim * self.horizon_steps

    @property
    def acting_network(self) -> keras.layers.Layer:
        return self.actor_target

    def weight_groups(self) -> dict[str, list[tf.Variable]]:
        return {**super().weight_groups(), "actor_target": self.actor_target.weights}

    def sync_targets(self) -> None:
        super().sync_targets()
        copy_weights(self.actor_target, self.network)

    def critic_loss(self, batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Next actions from the target actor (stochastic sampling)."""
        next_actions = self.denoise({"state": batch["next_obs"]}, self.actor_target, False, self.train_rng)
        return self.double_q_td_loss(batch, tf.stop_gradient(next_actions))

    def train_step(self, replay: Any, batch_size: int, train_actor: bool) -> dict[str, tf.Tensor]:
        _, batch = replay.sample(batch_size)
        loss_c, q = self.critic_step(lambda: self.critic_loss(batch))
        out = {"critic": loss_c, "q": q}
        if train_actor:
            idx, fresh = replay.sample(batch_size)
            cond = {"state": fresh["obs"]}
            improved = action_gradient(self.critic, cond, fresh["actions"], self.action_gradient_steps,
                                       self.action_lr, self.action_grad_norm)
            replay.write("actions", idx, improved)
            out["actor"] = self.actor_step(lambda: self.diffusion_loss(improved, cond))
        polyak_update(self.critic_target.weights, self.critic.weights, self.tau)
        polyak_update(self.actor_target.weights, self.network.weights, self.tau)
        return out
