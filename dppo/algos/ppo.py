"""The PPO learner shared by every on-policy method: DPPO, its DDIM and pixel variants, exact likelihood, and
Gaussian / GMM PPO. A method is a policy that implements four things:

* ``act(cond, deterministic) -> (action, sample)``: the chunk sent to the env and what the update scores again
  (a DPPO chain, or the action itself);
* ``transition_log_probs(cond, sample, training) -> (log_probs (B, n), extras)``: one clamped log-probability per
  transition of the sample (n = K' denoising transitions for DPPO, 1 for single-step policies); ``extras`` may hold
  per-row "entropy" and "std" (B,) for the entropy bonus and the logs;
* ``ppo_clip`` (n,) and ``ppo_weights`` (n,): the ratio clip and the advantage weight of each transition
  (DPPO: the per-denoising-step clip schedule and gamma_denoising^(K'-1-k); single step: [clip] and [1]);
* ``critic`` (V(s)), ``trainable_actor_variables()`` and the PPO options ``norm_adv``, ``clip_vloss_coef``,
  ``clip_adv_quantiles``.

Optional extension hooks (absent on DPPO, whose numbers they leave untouched; DPOER in dppo/algos/dpoer.py
uses them): ``extras["unclipped_penalty"]`` (B, n) is added to the unclipped argument of the PPO max;
``extra_loss(cond, samples, new_lp, extras) -> scalar`` is added to each minibatch loss inside the tape;
``extra_optimizers() -> [(AdamW, follows_actor)]`` are stepped on their own variables every minibatch with that
loss's gradient (not accumulated; ``follows_actor`` ones skip the critic warm-up); ``extra_state()`` variables
go into checkpoints; ``extra_metrics() -> {name: float}`` is logged after each update as ``loss/<name>``.

A minibatch is ``batch_size`` env steps with all their transitions (the reference v0.5 unit of every shipped
config): advantages are normalised over its env steps and the critic runs once per env step. All epochs run in
one ``tf.function``, with the ``target_kl`` early stop and gradient accumulation inside.

Micro-batching (``micro_batch`` env steps, ``train.micro_batch``; off by default): each minibatch's advantages are
prepared (normalised, quantile-clipped) over the whole minibatch first, then its loss and gradients are computed
in row chunks of ``micro_batch`` env steps inside the compiled update and summed, each chunk weighted by its share
of the rows. Every loss term is a mean over rows, so the loss, its terms (``approx_kl`` for the ``target_kl``
stop included) and the gradients equal the whole minibatch's up to float summation order. Two chunks are in
flight at once, so on a multi-core CPU one's forward pass overlaps the other's backward pass (the gain measured is
this overlap, not cache locality: per CPU-second the update is as efficient as unchunked). A policy with
``extra_loss`` must declare it a mean over the rows (``extra_loss_row_mean = True``, as ``PPOEntDiffusion`` does;
``splits_exactly``) or micro-batching is refused (DPOER's temperature loss samples the entropy of the whole
minibatch). Randomness inside a network's training forward
pass (dropout, image augmentation) is drawn per chunk, so there only the distribution is the same.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from dppo.utils.cond import Cond, gather_cond
from dppo.utils.optim import AdamW
from dppo.utils.seeding import tf_stream

TERMS = ("pg_loss", "v_loss", "entropy_loss", "approx_kl", "clipfrac", "ratio", "entropy", "std")


class PPOBatch(NamedTuple):
    """One iteration's data, N env steps: what crosses from the runner to the learner."""

    cond: Cond  # {"state": (N, T_o, D_o)[, "rgb": ...]}
    samples: tf.Tensor  # (N, ...) what ``act`` returned as sample
    returns: tf.Tensor  # (N,)
    values: tf.Tensor  # (N,) V(s) at rollout time
    advantages: tf.Tensor  # (N,)
    log_probs: tf.Tensor  # (N, n) at rollout time


def normalize_advantages(adv: tf.Tensor) -> tf.Tensor:
    """(A - mean) / (std + 1e-8) with the unbiased std (torch.Tensor.std)."""
    n = tf.cast(tf.size(adv), adv.dtype)
    mean = tf.reduce_mean(adv)
    std = tf.sqrt(tf.reduce_sum(tf.square(adv - mean)) / tf.maximum(n - 1.0, 1.0))
    return (adv - mean) / (std + 1e-8)


def quantile(x: tf.Tensor, q: float) -> tf.Tensor:
    """Linear-interpolation quantile of a 1-D tensor (torch.quantile's default)."""
    s = tf.sort(x)
    pos = q * tf.cast(tf.size(s) - 1, tf.float32)
    lo = tf.cast(tf.floor(pos), tf.int32)
    hi = tf.minimum(lo + 1, tf.size(s) - 1)
    w = pos - tf.floor(pos)
    return tf.gather(s, lo) * (1 - w) + tf.gather(s, hi) * w


def prepare_advantages(policy: Any, adv: tf.Tensor) -> tf.Tensor:
    """What ``ppo_terms`` does to the advantages of a whole minibatch before weighting them: normalisation over
    its env steps (``norm_adv``), then clipping to its quantiles (``clip_adv_quantiles``)."""
    adv = normalize_advantages(adv) if policy.norm_adv else adv
    lo_q, hi_q = policy.clip_adv_quantiles
    if lo_q > 0.0 or hi_q < 1.0:
        adv = tf.clip_by_value(adv, quantile(adv, lo_q), quantile(adv, hi_q))
    return adv


def splits_exactly(policy: Any) -> bool:
    """Whether a minibatch's loss is the row-weighted sum of its row shares' losses: true unless the policy adds an
    ``extra_loss`` that is not a mean over the rows (``extra_loss_row_mean``). Micro-batches and replicas need it."""
    return not hasattr(policy, "extra_loss") or bool(getattr(policy, "extra_loss_row_mean", False))


def ppo_terms(policy: Any, new_lp: tf.Tensor, old_lp: tf.Tensor, advantages: tf.Tensor, values: tf.Tensor,
              returns: tf.Tensor, old_values: tf.Tensor, extras: dict[str, tf.Tensor],
              adv_prepared: bool = False) -> dict[str, tf.Tensor]:
    """PPO loss terms and diagnostics of one minibatch of B env steps.

    ``new_lp``/``old_lp`` (B, n) clamped per-transition log-probs, ``advantages``/``values``/``returns``/
    ``old_values`` (B,). The advantage of an env step is normalised over the B env steps, clipped to the
    configured quantiles (both skipped when ``adv_prepared``: a micro-batch of a minibatch whose advantages
    ``prepare_advantages`` already saw whole), then weighted per transition by ``policy.ppo_weights``; the ratio
    of transition k is clipped at 1 +- ``policy.ppo_clip[k]``. Every term is a mean over the B rows.
    """
    adv = advantages if adv_prepared else prepare_advantages(policy, advantages)
    adv = adv[:, None] * policy.ppo_weights[None, :]
    clip = policy.ppo_clip[None, :]
    log_ratio = new_lp - old_lp
    ratio = tf.exp(log_ratio)
    unclipped = -adv * ratio
    if "unclipped_penalty" in extras:  # a policy's term inside the max's unclipped argument (DPOER's port)
        unclipped += extras["unclipped_penalty"]
    pg_loss = tf.reduce_mean(tf.maximum(unclipped, -adv * tf.clip_by_value(ratio, 1.0 - clip, 1.0 + clip)))
    if policy.clip_vloss_coef is None:
        v_loss = 0.5 * tf.reduce_mean(tf.square(values - returns))
    else:
        c = policy.clip_vloss_coef
        v_clipped = old_values + tf.clip_by_value(values - old_values, -c, c)
        v_loss = 0.5 * tf.reduce_mean(tf.maximum(tf.square(values - returns), tf.square(v_clipped - returns)))
    zero = tf.constant(0.0)
    entropy = tf.reduce_mean(extras["entropy"]) if "entropy" in extras else zero
    return {
        "pg_loss": pg_loss, "v_loss": v_loss, "entropy_loss": -entropy,
        "approx_kl": tf.stop_gradient(tf.reduce_mean((ratio - 1.0) - log_ratio)),
        "clipfrac": tf.stop_gradient(tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > clip, tf.float32))),
        "ratio": tf.stop_gradient(tf.reduce_mean(ratio)),
        "entropy": tf.stop_gradient(entropy),
        "std": tf.stop_gradient(tf.reduce_mean(extras["std"])) if "std" in extras else zero,
    }


class PPOLearner(tf.Module):
    """Owns the optimizers and the compiled update of a policy (see the module docstring)."""

    def __init__(self, policy: Any, actor_optimizer: AdamW, critic_optimizer: AdamW, seed: int,
                 grad_accumulate: int = 1, micro_batch: int | None = None):
        super().__init__(name="ppo_learner")
        self.policy = policy
        self.actor_optimizer, self.critic_optimizer = actor_optimizer, critic_optimizer
        self.grad_accumulate = max(1, int(grad_accumulate))
        self.micro_batch = int(micro_batch or 0)  # env steps per chunk of a minibatch; 0: whole minibatches
        if self.micro_batch < 0:
            raise ValueError(f"train.micro_batch must be null, 0 (off) or > 0 env steps, got {micro_batch}")
        if self.micro_batch and not splits_exactly(policy):
            raise ValueError(f"train.micro_batch: the extra_loss of {type(policy).__name__} is not a mean over the "
                             "minibatch's rows, so a minibatch cannot be split into micro-batches exactly; set "
                             "train.micro_batch to null")
        self.shuffle_rng = tf_stream(seed, "shuffle")  # minibatch order
        # the policy's own optimizers (e.g. a temperature), stepped beside the actor's (see the module docstring)
        self.extra_optimizers = list(policy.extra_optimizers()) if hasattr(policy, "extra_optimizers") else []
        self._acc = None
        if self.grad_accumulate > 1:
            self._acc = [tf.Variable(tf.zeros_like(v), trainable=False)
                         for v in [*policy.trainable_actor_variables(), *policy.critic.trainable_variables]]
        # straight-line code needs no AutoGraph (it costs tracing time); the update loops do
        self._score = tf.function(self._score_graph, autograph=False)
        self._values = tf.function(lambda cond: self.policy.critic(cond), reduce_retracing=True, autograph=False)
        self._update = tf.function(self._update_graph)

    # scoring ---------------------------------------------------------------------------------------------
    def _score_graph(self, cond: Cond, samples: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        log_probs, _ = self.policy.transition_log_probs(cond, samples, training=False)
        return self.policy.critic(cond), log_probs

    def score(self, cond: Cond, samples: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """V(s) (B,) and the clamped per-transition log-probs (B, n) of stored samples under the current policy."""
        return self._score(cond, samples)

    def values(self, cond: Cond) -> tf.Tensor:
        return self._values(cond)

    def loss(self, cond: Cond, samples: tf.Tensor, returns: tf.Tensor, old_values: tf.Tensor,
             advantages: tf.Tensor, old_log_probs: tf.Tensor, adv_prepared: bool = False) -> dict[str, tf.Tensor]:
        """Loss terms of one minibatch (B env steps), or of a micro-batch of one (``adv_prepared``: its advantages
        went through ``prepare_advantages`` with the whole minibatch)."""
        new_lp, extras = self.policy.transition_log_probs(cond, samples, training=True)
        values = self.policy.critic(cond, training=True)
        terms = ppo_terms(self.policy, new_lp, old_log_probs, advantages, values, returns, old_values, extras,
                          adv_prepared=adv_prepared)
        if hasattr(self.policy, "extra_loss"):
            terms["extra_loss"] = self.policy.extra_loss(cond, samples, new_lp, extras)
        return terms

    # update ----------------------------------------------------------------------------------------------
    def update(self, batch: PPOBatch, train_actor: bool, batch_size: int, update_epochs: int, vf_coef: float,
               ent_coef: float, target_kl: float | None) -> dict[str, float]:
        """All epochs of minibatch updates over the iteration's env steps."""
        out = self._update(batch, tf.constant(bool(train_actor)), batch_size=int(batch_size),
                           update_epochs=int(update_epochs), vf_coef=float(vf_coef), ent_coef=float(ent_coef),
                           target_kl=float(target_kl) if target_kl is not None else float("inf"))
        metrics = self.policy.extra_metrics() if hasattr(self.policy, "extra_metrics") else {}
        return {**{k: float(v) for k, v in out.items()}, **{k: float(v) for k, v in metrics.items()}}

    def _apply_extra(self, grads: list, n_model: int, train_actor: tf.Tensor) -> list:
        """Step the policy's own optimizers on their gradients; return the actor's and critic's."""
        start = n_model
        for opt, follows_actor in self.extra_optimizers:
            own = grads[start:start + len(opt.params)]
            start += len(opt.params)
            if follows_actor:
                if train_actor:
                    opt.apply(own)
            else:
                opt.apply(own)
        return grads[:n_model]

    def minibatch_gradients(self, batch: PPOBatch, i: tf.Tensor, vars_: list, vf_coef, ent_coef):
        """Loss, its terms and the gradients for ``vars_`` of the minibatch of env steps ``i``, whole or in
        micro-batches (the distributed learner of :mod:`dppo.algos.distributed` splits this across devices)."""
        if self.micro_batch:
            return self.micro_batch_gradients(batch, i, vars_, vf_coef, ent_coef)
        return self.rows_gradients(batch, i, tf.gather(batch.advantages, i), vars_, vf_coef, ent_coef)

    def rows_gradients(self, batch: PPOBatch, i: tf.Tensor, advantages: tf.Tensor, vars_: list, vf_coef, ent_coef,
                       adv_prepared: bool = False):
        """Loss (a mean over the env steps ``i``), its terms and its gradients for ``vars_``; ``advantages`` (the
        rows of ``i``) are prepared here unless ``adv_prepared``."""
        with tf.GradientTape() as tape:
            terms = self.loss(gather_cond(batch.cond, i), tf.gather(batch.samples, i), tf.gather(batch.returns, i),
                              tf.gather(batch.values, i), advantages, tf.gather(batch.log_probs, i),
                              adv_prepared=adv_prepared)
            loss = terms["pg_loss"] + ent_coef * terms["entropy_loss"] + vf_coef * terms["v_loss"]
            if "extra_loss" in terms:  # a policy's own loss term (module docstring)
                loss += terms["extra_loss"]
        grads = tape.gradient(loss, vars_)
        return loss, terms, [tf.zeros_like(v) if g is None else g for g, v in zip(grads, vars_)]

    def micro_batch_gradients(self, batch: PPOBatch, i: tf.Tensor, vars_: list, vf_coef, ent_coef):
        """``minibatch_gradients`` in chunks of ``micro_batch`` env steps (the last one may be shorter): the
        advantages are prepared over all of ``i``, then each chunk's mean loss, terms and gradients are added with
        weight rows_in_chunk / rows_in_minibatch (two chunks in flight)."""
        n = tf.size(i)
        m = self.micro_batch
        n_chunks = (n + m - 1) // m
        adv = prepare_advantages(self.policy, tf.gather(batch.advantages, i))
        keys = [*TERMS, *(["extra_loss"] if hasattr(self.policy, "extra_loss") else [])]

        def chunk(c, loss, terms, grads):
            start = c * m
            end = tf.minimum(start + m, n)
            w = tf.cast(end - start, tf.float32) / tf.cast(n, tf.float32)
            part_loss, part_terms, part_grads = self.rows_gradients(batch, i[start:end], adv[start:end], vars_,
                                                                    vf_coef, ent_coef, adv_prepared=True)
            return (c + 1, loss + w * part_loss, {k: terms[k] + w * part_terms[k] for k in keys},
                    [a + w * tf.convert_to_tensor(g) for a, g in zip(grads, part_grads)])

        start = (tf.constant(0), tf.constant(0.0), {k: tf.constant(0.0) for k in keys},
                 [tf.zeros_like(v) for v in vars_])
        # two chunks in flight: one's forward pass overlaps the other's backward pass and sums (batch 50000: 1.46x in
        # wall time on two cores shared with other jobs, 1.02x on quiet ones, benchmarks/notes.md); more would only
        # hold more chunks' activations at once
        _, loss, terms, grads = tf.while_loop(lambda c, *_: c < n_chunks, chunk, start, parallel_iterations=2)
        return loss, terms, grads

    def _apply(self, grads: list, n_actor: int, train_actor: tf.Tensor) -> None:
        if train_actor:
            self.actor_optimizer.apply(grads[:n_actor])
        self.critic_optimizer.apply(grads[n_actor:])

    def _update_graph(self, batch: PPOBatch, train_actor, batch_size, update_epochs, vf_coef, ent_coef, target_kl):
        n = tf.shape(batch.returns)[0]
        n_batch = tf.maximum(1, n // batch_size)  # the remainder of a shuffled epoch is dropped, as in the reference
        actor_vars = self.policy.trainable_actor_variables()
        vars_ = [*actor_vars, *self.policy.critic.trainable_variables]
        n_actor, n_model = len(actor_vars), len(vars_)
        vars_ += [v for opt, _ in self.extra_optimizers for v in opt.params]
        per_sample = tf.cast(tf.size(self.policy.ppo_clip), tf.float32)
        zero = tf.constant(0.0)
        last = {key: zero for key in ("loss", *TERMS, "minibatch_transitions")}
        clipfrac_sum, count, stop = zero, tf.constant(0), tf.constant(False)
        for _ in tf.range(update_epochs):
            perm = tf.argsort(self.shuffle_rng.uniform((n,)))
            for b in tf.range(n_batch):
                i = perm[b * batch_size:(b + 1) * batch_size]
                loss, terms, grads = self.minibatch_gradients(batch, i, vars_, vf_coef, ent_coef)
                grads = self._apply_extra(grads, n_model, train_actor)
                last = {"loss": loss, **{key: terms[key] for key in TERMS},
                        "minibatch_transitions": tf.cast(tf.size(i), tf.float32) * per_sample}
                clipfrac_sum += terms["clipfrac"]
                count += 1
                if self._acc is None:
                    self._apply(grads, n_actor, train_actor)
                    if terms["approx_kl"] > target_kl:
                        stop = tf.constant(True)
                        break
                else:  # sum gradients; step (and check the KL) every grad_accumulate minibatches, as the reference
                    for acc, g in zip(self._acc, grads):
                        acc.assign_add(g)
                    if count % self.grad_accumulate == 0:
                        self._apply([tf.identity(acc) for acc in self._acc], n_actor, train_actor)
                        for acc in self._acc:
                            acc.assign(tf.zeros_like(acc))
                        if train_actor and terms["approx_kl"] > target_kl:
                            stop = tf.constant(True)
                            break
            if stop:
                break
        if self._acc is not None:  # a partial accumulation is dropped, as the reference does
            for acc in self._acc:
                acc.assign(tf.zeros_like(acc))
        n_done = tf.cast(count, tf.float32)
        return {**last, "clipfrac": clipfrac_sum / n_done, "n_minibatches": n_done}

    # checkpoints -----------------------------------------------------------------------------------------
    def checkpoint_groups(self) -> dict[str, list]:
        groups = {"optimizer/actor": self.actor_optimizer.state, "optimizer/critic": self.critic_optimizer.state}
        if hasattr(self.policy, "extra_state"):  # the policy's extension variables and their optimizers
            groups["policy_extra"] = list(self.policy.extra_state())
            for i, (opt, _) in enumerate(self.extra_optimizers):
                groups[f"optimizer/extra{i}"] = opt.state
        return groups
