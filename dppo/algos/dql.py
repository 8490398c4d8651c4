"""DQL (Diffusion Q-Learning): back-propagate Q through the whole reverse chain, regularised by the diffusion loss.

Per update, on one minibatch (:meth:`DQLDiffusion.train_step`):

* critic: y = r + gamma (1 - terminated) min(Q1', Q2')(s', a'), a' sampled stochastically by the current actor
  (no gradient); loss mean((Q1 - y)^2) + mean((Q2 - y)^2); Polyak (``target_ema_rate``) of the target critic;
* actor (after the critic warm-up): a_new = the K-step reverse chain run differentiably (stochastic, with the
  ``min_sampling_denoising_std`` floor), L = L_diff + eta * L_q with
  L_q = -mean(Q_a(s, a_new)) / mean|Q_b(s, a_new)| (denominator held constant; (a, b) = (1, 2) or (2, 1) with
  probability 1/2 each).

**[quirk fixed]** the reference's "BC" term L_diff is the diffusion loss of the policy's *own fresh sample*
a_new (which only pulls the policy towards what it already does, and feeds gradient back through the chain).
Here L_diff is the diffusion loss of the minibatch's **buffer** actions, as in the DQL paper.
``model.bc_on_own_sample: true`` restores the reference's term (for comparing with its published numbers).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from dppo.algos.replay_common import ReplayDiffusionModel, normalized_q_loss, polyak_update


class DQLDiffusion(ReplayDiffusionModel):
    """Actor trained through its sampler, double-Q critic and its target."""

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer, eta: float = 1.0,
                 target_ema_rate: float = 0.005, bc_on_own_sample: bool = False, **kwargs: Any):
        super().__init__(actor, critic, **kwargs)
        self.eta = float(eta)
        self.tau = float(target_ema_rate)
        self.bc_on_own_sample = bool(bc_on_own_sample)

    def critic_loss(self, batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """Next actions from the current actor (stochastic sampling)."""
        next_actions = self.denoise({"state": batch["next_obs"]}, self.network, False, self.train_rng)
        return self.double_q_td_loss(batch, tf.stop_gradient(next_actions))

    def actor_loss(self, batch: dict[str, tf.Tensor], first_head: tf.Tensor) -> tf.Tensor:
        cond = {"state": batch["obs"]}
        new_actions = self.denoise(cond, self.network, False, self.train_rng)  # differentiable chain
        q1, q2 = self.critic(cond, new_actions)
        bc = self.diffusion_loss(new_actions if self.bc_on_own_sample else batch["actions"], cond)
        return bc + self.eta * normalized_q_loss(q1, q2, first_head)

    def train_step(self, replay: Any, batch_size: int, train_actor: bool) -> dict[str, tf.Tensor]:
        _, batch = replay.sample(batch_size)
        loss_c, q = self.critic_step(lambda: self.critic_loss(batch))
        out = {"critic": loss_c, "q": q}
        if train_actor:
            first_head = self.train_rng.uniform(()) > 0.5
            out["actor"] = self.actor_step(lambda: self.actor_loss(batch, first_head))
        polyak_update(self.critic_target.weights, self.critic.weights, self.tau)
        return out
