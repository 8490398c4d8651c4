"""Gaussian PPO (spec 3.1): single-step PPO on the whole action chunk of a Gaussian policy.

``SingleStepPPO`` is the loss and compiled update shared by every policy that scores a stored sample with
one log-probability per env step (Gaussian, GMM, exact-likelihood diffusion): log-probs clamped to
[-5, 2] (after averaging over dims for the Gaussian, joint for the GMM), one scalar ratio clip,
advantages normalised within each minibatch (unbiased std), value loss 1/2 MSE (optionally clipped),
entropy bonus ent_coef * entropy, optional gradient accumulation (the pixel agents' ``grad_accumulate``).
It exposes to the on-policy runner the same interface as ``PPODiffusion``: ``act``, ``values``,
``values_and_log_probs``, ``update``, ``trainable_actor_variables``, ``set_optimizers``, ``critic``,
``network`` and ``actor_ft``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from dppo.policies.gaussian import GaussianModel
from dppo.utils import checkpoint as ckpt
from dppo.utils.cond import Cond, gather_cond
from dppo.utils.optim import AdamW
from dppo.utils.seeding import tf_stream

LOG_PROB_CLAMP = (-5.0, 2.0)


def normalize_advantages(adv: tf.Tensor) -> tf.Tensor:
    """(A - mean) / (std + 1e-8) with the unbiased std, as torch.Tensor.std."""
    n = tf.cast(tf.size(adv), adv.dtype)
    mean = tf.reduce_mean(adv)
    std = tf.sqrt(tf.reduce_sum(tf.square(adv - mean)) / tf.maximum(n - 1.0, 1.0))
    return (adv - mean) / (std + 1e-8)


class SingleStepPPO:
    """Mixin: PPO with one stored sample and one log-probability per env step.

    Subclasses implement ``policy_terms(cond, samples, training) -> (log_prob (B,), extras)`` where
    ``extras`` may hold "entropy" (B,) and "std" (B,), and ``sample_for_rollout(cond, deterministic)``.
    """

    single_step = True
    critic: keras.layers.Layer
    clip_ploss_coef: float
    clip_vloss_coef: float | None
    norm_adv: bool
    log_prob_clamp: tuple[float, float] | None
    grad_accumulate: int
    seed: int

    def _init_ppo(self, clip_ploss_coef: float, clip_vloss_coef: float | None, norm_adv: bool,
                  log_prob_clamp: Any, grad_accumulate: int) -> None:
        self.clip_ploss_coef = float(clip_ploss_coef)
        self.clip_vloss_coef = None if clip_vloss_coef is None else float(clip_vloss_coef)
        self.norm_adv = bool(norm_adv)
        self.log_prob_clamp = None if log_prob_clamp is None else (float(log_prob_clamp[0]), float(log_prob_clamp[1]))
        self.grad_accumulate = max(1, int(grad_accumulate))
        self.actor_optimizer: AdamW | None = None
        self.critic_optimizer: AdamW | None = None
        self._acc: list[tf.Variable] | None = None

    def _compile_ppo(self) -> None:
        self.shuffle_rng = tf_stream(self.seed, "shuffle")  # minibatch order
        # straight-line code needs no AutoGraph (it costs tracing time); the update loops do
        self._old = tf.function(self._old_graph, autograph=False)
        self._update = tf.function(self._update_graph)
        self._values_fn = tf.function(self._values_graph, reduce_retracing=True, autograph=False)

    # the runner's interface ------------------------------------------------------------------------------
    def act(self, cond: Cond, deterministic: bool) -> tuple[tf.Tensor, tf.Tensor]:
        """Action chunk (B, T_p, D_a) and the sample to store (the same chunk)."""
        a = self.sample_for_rollout(cond, deterministic)
        return a, a

    def _values_graph(self, cond: Cond) -> tf.Tensor:
        return self.critic(cond)

    def values(self, cond: Cond) -> tf.Tensor:
        return self._values_fn(cond)

    def _old_graph(self, cond: Cond, samples: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        log_prob, _ = self.policy_terms(cond, samples, training=False)
        return self.critic(cond), log_prob

    def values_and_log_probs(self, cond: Cond, samples: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """V(s) (B,) and the (unclamped) log-probs (B,) of the stored samples under the current policy."""
        return self._old(cond, samples)

    def trainable_actor_variables(self) -> list[tf.Variable]:
        return self.actor_ft.trainable_variables

    def set_optimizers(self, actor_optimizer: AdamW, critic_optimizer: AdamW) -> None:
        self.actor_optimizer, self.critic_optimizer = actor_optimizer, critic_optimizer
        if self.grad_accumulate > 1 and self._acc is None:
            self._acc = [tf.Variable(tf.zeros_like(v), trainable=False)
                         for v in [*self.trainable_actor_variables(), *self.critic.trainable_variables]]
            self._acc_count = tf.Variable(0, dtype=tf.int32, trainable=False)

    # loss ------------------------------------------------------------------------------------------------
    def _clamp(self, log_prob: tf.Tensor) -> tf.Tensor:
        if self.log_prob_clamp is None:
            return log_prob
        return tf.clip_by_value(log_prob, *self.log_prob_clamp)

    def ppo_loss(self, cond: Cond, samples: tf.Tensor, returns: tf.Tensor, old_values: tf.Tensor,
                 advantages: tf.Tensor, old_log_probs: tf.Tensor) -> dict[str, tf.Tensor]:
        """The PPO loss terms and diagnostics of one minibatch (spec 3.1 / 2.5 without the denoising axis)."""
        new_lp, extras = self.policy_terms(cond, samples, training=True)
        new_lp, old_lp = self._clamp(new_lp), self._clamp(old_log_probs)
        log_ratio = new_lp - old_lp
        ratio = tf.exp(log_ratio)
        adv = normalize_advantages(advantages) if self.norm_adv else advantages
        c = self.clip_ploss_coef
        pg_loss = tf.reduce_mean(tf.maximum(-adv * ratio, -adv * tf.clip_by_value(ratio, 1.0 - c, 1.0 + c)))
        values = self.critic(cond, training=True)
        if self.clip_vloss_coef is None:
            v_loss = 0.5 * tf.reduce_mean(tf.square(values - returns))
        else:
            v_clipped = old_values + tf.clip_by_value(values - old_values, -self.clip_vloss_coef, self.clip_vloss_coef)
            v_loss = 0.5 * tf.reduce_mean(tf.maximum(tf.square(values - returns), tf.square(v_clipped - returns)))
        zero = tf.constant(0.0)
        entropy = tf.reduce_mean(extras["entropy"]) if "entropy" in extras else zero
        return {
            "pg_loss": pg_loss, "v_loss": v_loss, "entropy_loss": -entropy,
            "approx_kl": tf.stop_gradient(tf.reduce_mean((ratio - 1.0) - log_ratio)),
            "clipfrac": tf.stop_gradient(tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > c, tf.float32))),
            "ratio": tf.stop_gradient(tf.reduce_mean(ratio)),
            "entropy": tf.stop_gradient(entropy),
            "std": tf.stop_gradient(tf.reduce_mean(extras["std"])) if "std" in extras else zero,
        }

    # update ----------------------------------------------------------------------------------------------
    def update(self, batch: dict[str, Any], train_actor: bool, batch_size: int, update_epochs: int,
               vf_coef: float, ent_coef: float, target_kl: float | None, reward_horizon: int = 0) -> dict[str, float]:
        """All epochs of minibatch updates over the iteration's env steps (``reward_horizon`` is unused:
        single-step policies score the whole chunk, as the reference does)."""
        if self.actor_optimizer is None:
            raise RuntimeError("call set_optimizers(actor_optimizer, critic_optimizer) before update")
        out = self._update(batch["cond"], batch["samples"], batch["returns"], batch["values"], batch["advantages"],
                           batch["log_probs"], tf.constant(bool(train_actor)), batch_size=int(batch_size),
                           update_epochs=int(update_epochs), vf_coef=float(vf_coef), ent_coef=float(ent_coef),
                           target_kl=float(target_kl) if target_kl is not None else float("inf"))
        return {k: float(v) for k, v in out.items()}

    def _apply(self, actor_grads: list, critic_grads: list, train_actor: tf.Tensor) -> None:
        if train_actor:
            self.actor_optimizer.apply(actor_grads)
        self.critic_optimizer.apply(critic_grads)

    def _update_graph(self, cond, samples, returns, values, advantages, log_probs, train_actor, batch_size,
                      update_epochs, vf_coef, ent_coef, target_kl):
        n = tf.shape(samples)[0]
        n_batch = tf.maximum(1, n // batch_size)
        actor_vars = self.trainable_actor_variables()
        critic_vars = self.critic.trainable_variables
        n_actor = len(actor_vars)
        zero = tf.constant(0.0)
        keys = ("loss", "pg_loss", "v_loss", "entropy_loss", "approx_kl", "ratio", "entropy", "std")
        last = {key: zero for key in keys}
        clipfrac_sum, n_done, stop = zero, zero, tf.constant(False)
        for _ in tf.range(update_epochs):
            perm = tf.argsort(self.shuffle_rng.uniform((n,)))
            for b in tf.range(n_batch):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                with tf.GradientTape() as tape:
                    terms = self.ppo_loss(gather_cond(cond, idx), tf.gather(samples, idx), tf.gather(returns, idx),
                                          tf.gather(values, idx), tf.gather(advantages, idx), tf.gather(log_probs, idx))
                    loss = terms["pg_loss"] + ent_coef * terms["entropy_loss"] + vf_coef * terms["v_loss"]
                grads = tape.gradient(loss, [*actor_vars, *critic_vars])
                grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, [*actor_vars, *critic_vars])]
                last = {"loss": loss, **{key: terms[key] for key in keys if key != "loss"}}
                clipfrac_sum += terms["clipfrac"]
                n_done += 1.0
                if self.grad_accumulate == 1:
                    self._apply(grads[:n_actor], grads[n_actor:], train_actor)
                    if terms["approx_kl"] > target_kl:
                        stop = tf.constant(True)
                        break
                else:  # sum gradients; step (and check the KL) every grad_accumulate minibatches (spec 2.8)
                    for acc, g in zip(self._acc, grads):
                        acc.assign_add(g)
                    self._acc_count.assign_add(1)
                    if self._acc_count % self.grad_accumulate == 0:
                        summed = [tf.identity(acc) for acc in self._acc]
                        self._apply(summed[:n_actor], summed[n_actor:], train_actor)
                        for acc in self._acc:
                            acc.assign(tf.zeros_like(acc))
                        if train_actor and terms["approx_kl"] > target_kl:
                            stop = tf.constant(True)
                            break
            if stop:
                break
        return {**last, "clipfrac": clipfrac_sum / n_done, "n_minibatches": n_done}


def load_single_step_policy(model: Any, path: str | Path) -> None:
    """Initialise from ``path``: a pre-training checkpoint gives the policy ("model"); a fine-tuning
    checkpoint gives the fine-tuned policy ("actor_ft") and the critic."""
    from dppo.policies.gaussian import load_network_weights

    state = ckpt.load_checkpoint(path)
    load_network_weights(model, path)
    if "actor_ft" in ckpt.groups_in(state) and "critic" in ckpt.groups_in(state):
        ckpt.restore_group(state, "critic", model.critic.weights, path)


class PPOGaussian(SingleStepPPO, GaussianModel):
    """Gaussian policy fine-tuned with PPO (the reference's PPO_Gaussian / VPG_Gaussian).

    ``network`` (= ``actor_ft``) is trained; ``actor`` keeps a frozen copy of the initial weights (the
    reference keeps it for its unused BC term). Log-prob = mean over the T_p * D_a dims, clamped to
    [-5, 2]; entropy = mean per-dim entropy; "std" = mean std.
    """

    def __init__(self, actor: keras.layers.Layer, critic: keras.layers.Layer,
                 actor_ft: keras.layers.Layer | None = None, clip_ploss_coef: float = 0.01,
                 clip_vloss_coef: float | None = None, norm_adv: bool = True,
                 log_prob_clamp: tuple[float, float] | None = LOG_PROB_CLAMP, grad_accumulate: int = 1,
                 use_bc_loss: bool = False, bc_loss_coeff: float = 0.0, network_path: str | None = None,
                 **kwargs: Any):
        if use_bc_loss:
            raise NotImplementedError("model.use_bc_loss is not supported for Gaussian PPO (no config uses it)")
        self._init_ppo(clip_ploss_coef, clip_vloss_coef, norm_adv, log_prob_clamp, grad_accumulate)
        self.critic = critic
        super().__init__(network=actor_ft if actor_ft is not None else actor, network_path=None, **kwargs)
        self.actor_ft = self.network
        self.actor = actor if actor_ft is not None else None
        self.critic(self.dummy_cond())
        if network_path:
            load_single_step_policy(self, network_path)
        self.sync_frozen_actor()
        self._compile_ppo()

    def sync_frozen_actor(self) -> None:
        """actor <- network (the frozen copy of the weights fine-tuning starts from)."""
        if self.actor is None:
            return
        self.build_network(self.actor)
        for dst, src in zip(self.actor.weights, self.network.weights):
            dst.assign(src)
        self.actor.trainable = False

    def sample_for_rollout(self, cond: Cond, deterministic: bool) -> tf.Tensor:
        return self.sample(cond, deterministic=deterministic)

    def policy_terms(self, cond: Cond, samples: tf.Tensor, training: bool) -> tuple[tf.Tensor, dict]:
        log_prob, entropy, std = self.log_prob_and_entropy(cond, samples, training=training)
        return log_prob, {"entropy": entropy, "std": std}
