"""IDQL (Implicit Diffusion Q-Learning): an expectile value function, Q-learning towards it, a diffusion policy
cloned on the buffer, and action selection among sampled candidates by Q.

Per update, on one minibatch (:meth:`IDQLDiffusion.train_step`):

* V: u = min(Q1', Q2')(s, a) - V(s) with the *target* Q, L_V = mean(|expectile - 1(u <= 0)| u^2)
  (``expectile`` 0.8: V tracks an upper expectile of Q over the buffer's actions);
* Q: y = r + gamma (1 - terminated) V(s') (V just updated, no gradient), loss mean((Q1 - y)^2) + mean((Q2 - y)^2);
  Polyak (``critic_tau``) of the target Q;
* actor (after the critic warm-up): the plain diffusion loss of the buffer actions.

Acting (:meth:`IDQLDiffusion._act_graph`): ``eval_sample_num`` candidate chunks per state from the diffusion
policy; evaluation with ``eval_deterministic`` (and training without ``use_expectile_exploration``) takes the
candidate with the largest min(Q1', Q2'); otherwise each candidate gets weight 0.7 if Q' - V > 0 else 0.3
("expectile exploration"), and one is drawn with probability proportional to its weight.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dppo.algos.replay_common import ReplayDiffusionModel, double_q_loss, expectile_loss, polyak_update, td_target
from dppo.utils.cond import Cond
from dppo.utils.optim import AdamW

EXPLORATION_WEIGHT = 0.7  # candidates with positive advantage; 1 - this for the others


def select_candidates(q: tf.Tensor, v: tf.Tensor | None, uniform: tf.Tensor | None) -> tf.Tensor:
    """Index (B,) of the chosen candidate per state from Q values ``q`` (S, B): argmax over S when ``v`` is None;
    else weights 0.7 (Q - V > 0) / 0.3 per candidate, normalised, and the candidate whose cumulative weight
    first exceeds ``uniform`` (B,) in [0, 1) - a categorical draw by inverse CDF."""
    if v is None:
        return tf.argmax(q, axis=0, output_type=tf.int32)
    w = tf.where(q - v[None, :] > 0.0, EXPLORATION_WEIGHT, 1.0 - EXPLORATION_WEIGHT)
    cdf = tf.cumsum(w / tf.reduce_sum(w, axis=0, keepdims=True), axis=0)
    idx = tf.reduce_sum(tf.cast(cdf <= uniform[None, :], tf.int32), axis=0)
    return tf.minimum(idx, tf.shape(q)[0] - 1)


class IDQLDiffusion(ReplayDiffusionModel):
    """BC actor, double-Q critic ``critic_q`` with its target, expectile value ``critic_v``."""

    def __init__(self, actor: keras.layers.Layer, critic_q: keras.layers.Layer, critic_v: keras.layers.Layer,
                 critic_q_target: keras.layers.Layer | None = None, critic_tau: float = 0.001,
                 expectile: float = 0.8, eval_sample_num: int = 10,
                 eval_deterministic: bool = False, use_expectile_exploration: bool = True,
                 critic_weight_decay: float = 0.0, **kwargs: Any):
        self.critic_v = critic_v
        super().__init__(actor, critic_q, critic_q_target, critic_weight_decay=critic_weight_decay, **kwargs)
        self.critic_v(self.dummy_cond())
        self.critic_v_optimizer = AdamW(self.critic_v.trainable_variables, float(self.critic_optimizer.learning_rate),
                                        critic_weight_decay, name="critic_v_optimizer")
        self.tau = float(critic_tau)
        self.expectile = float(expectile)
        self.num_sample = int(eval_sample_num)
        self.eval_deterministic = bool(eval_deterministic)
        self.use_expectile_exploration = bool(use_expectile_exploration)

    @property
    def critic_q(self) -> keras.layers.Layer:
        return self.critic

    def weight_groups(self) -> dict[str, list[tf.Variable]]:
        return {**super().weight_groups(), "critic_v": self.critic_v.weights}

    def optimizers(self) -> dict[str, AdamW]:
        return {**super().optimizers(), "critic_v": self.critic_v_optimizer}

    # acting -------------------------------------------------------------------------------------------
    def _act_graph(self, cond: Cond, deterministic: bool) -> tf.Tensor:
        greedy = deterministic and self.eval_deterministic
        s, b = self.num_sample, tf.shape(cond["state"])[0]
        rep = {k: tf.tile(v, [s] + [1] * (len(v.shape) - 1)) for k, v in cond.items()}  # row i*B + j = state j
        samples = self.denoise(rep, self.network, greedy, self.rng)
        q = tf.reshape(tf.minimum(*self.critic_target(rep, samples)), (s, b))
        if greedy or not self.use_expectile_exploration:
            idx = select_candidates(q, None, None)
        else:
            idx = select_candidates(q, self.critic_v(cond), self.rng.uniform((b,)))
        samples = tf.reshape(samples, (s, b, self.horizon_steps, self.action_dim))
        return tf.gather(tf.transpose(samples, (1, 0, 2, 3)), idx, batch_dims=1)

    # update -------------------------------------------------------------------------------------------
    def value_loss(self, batch: dict[str, tf.Tensor]) -> tf.Tensor:
        cond = {"state": batch["obs"]}
        q = tf.stop_gradient(tf.minimum(*self.critic_target(cond, batch["actions"])))
        return expectile_loss(q - self.critic_v(cond, training=True), self.expectile)

    def q_loss(self, batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        next_v = self.critic_v({"state": batch["next_obs"]})
        y = td_target(batch["rewards"], batch["terminated"], next_v, self.gamma)
        q1, q2 = self.critic({"state": batch["obs"]}, batch["actions"])
        return double_q_loss(q1, q2, y), tf.reduce_mean(q1)

    def train_step(self, replay: Any, batch_size: int, train_actor: bool) -> dict[str, tf.Tensor]:
        _, batch = replay.sample(batch_size)
        with tf.GradientTape() as tape:
            loss_v = self.value_loss(batch)
        self.critic_v_optimizer.apply(tape.gradient(loss_v, self.critic_v.trainable_variables))
        loss_q, q = self.critic_step(lambda: self.q_loss(batch))
        polyak_update(self.critic_target.weights, self.critic.weights, self.tau)
        out = {"critic": loss_q + loss_v, "critic_q": loss_q, "critic_v": loss_v, "q": q}
        if train_actor:
            out["actor"] = self.actor_step(lambda: self.diffusion_loss(batch["actions"], {"state": batch["obs"]}))
        return out

    def metric_names(self, train_actor: bool) -> tuple[str, ...]:
        return ("critic", "critic_q", "critic_v", "q", *(("actor",) if train_actor else ()))
