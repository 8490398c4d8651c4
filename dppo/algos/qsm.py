"""QSM (Q-Score Matching): match the policy's score to the action gradient of Q at noisy actions.

Per update, on one minibatch (:meth:`QSMDiffusion.train_step`):

* critic: y = r + gamma (1 - terminated) min(Q1', Q2')(s', a'), a' sampled stochastically by the current actor;
  loss mean((Q1 - y)^2) + mean((Q2 - y)^2); Polyak (``critic_tau``) of the target critic;
* actor (after the critic warm-up): for the buffer actions a, t ~ U{0..K-1}, eps ~ N(0, I),
  x_t = sqrt(abar_t) a + sqrt(1 - abar_t) eps; g = (grad_x Q1(s, x_t) + grad_x Q2(s, x_t)) / 2 with the current
  critic, taken at the *noisy* action and held constant; L = mean((-eps_theta(x_t, t, s) - q_grad_coeff g)^2)
  (-eps_theta points along the score, which should follow q_grad_coeff grad Q).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dppo.algos.replay_common import ReplayDiffusionModel, polyak_update
from dppo.utils.cond import Cond


def q_action_gradient(critic: keras.layers.Layer, cond: Cond, x: tf.Tensor) -> tf.Tensor:
    """(grad_x Q1 + grad_x Q2)(s, x) / 2 per row, without gradient to anything."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        q1, q2 = critic(cond, x)
        s1, s2 = tf.reduce_sum(q1), tf.reduce_sum(q2)
    g = 0.5 * (tape.gradient(s1, x) + tape.gradient(s2, x))
    del tape
    return tf.stop_gradient(g)


class QSMDiffusion(ReplayDiffusionModel):
    """Actor trained by score matching to grad Q, double-Q critic and its target."""

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer, q_grad_coeff: float = 10.0,
                 critic_tau: float = 0.005, **kwargs: Any):
        super().__init__(actor, critic, **kwargs)
        self.q_grad_coeff = float(q_grad_coeff)
        self.tau = float(critic_tau)

    def critic_loss(self, batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Next actions from the current actor (stochastic sampling)."""
        next_actions = self.denoise({"state": batch["next_obs"]}, self.network, False, self.train_rng)
        return self.double_q_td_loss(batch, tf.stop_gradient(next_actions))

    def score_target_loss(self, actions: tf.Tensor, cond: Cond, t: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        """mean((-eps_theta(x_t, t, s) - q_grad_coeff * g)^2) at x_t = q_sample(actions, t, noise)."""
        x_t = self.q_sample(actions, t, noise)
        g = q_action_gradient(self.critic, cond, x_t)
        return tf.reduce_mean(tf.square(-self.network(x_t, t, cond, training=True) - self.q_grad_coeff * g))

    def actor_loss(self, batch: dict[str, tf.Tensor]) -> tf.Tensor:
        actions = batch["actions"]
        t = self.train_rng.uniform((tf.shape(actions)[0],), 0, self.denoising_steps, dtype=tf.int32)
        noise = self.train_rng.normal(tf.shape(actions))
        return self.score_target_loss(actions, {"state": batch["obs"]}, t, noise)

    def train_step(self, replay: Any, batch_size: int, train_actor: bool) -> dict[str, tf.Tensor]:
        _, batch = replay.sample(batch_size)
        loss_c, q = self.critic_step(lambda: self.critic_loss(batch))
        out = {"critic": loss_c, "q": q}
        if train_actor:
            out["actor"] = self.actor_step(lambda: self.actor_loss(batch))
        polyak_update(self.critic_target.weights, self.critic.weights, self.tau)
        return out
