"""On-policy fine-tuning loop: rollout with the compiled sampler, GAE, compiled PPO update, logging,
evaluation iterations, trajectory plots and exactly resumable checkpoints.

The loop is policy-agnostic: the model (``PPODiffusion``, Gaussian/GMM PPO, exact likelihood) acts and scores
samples; the shared ``PPOLearner`` owns the optimizers and the compiled update; a ``PPOBatch`` crosses between.
It is also task-agnostic: trajectory figures come from the config's ``train.plotter`` (e.g.
:class:`dppo.viz.trajectories.TrajPlotter`), called every ``train.render.freq`` iterations.

Before the first iteration the config, the normalisation file, the base policy's recorded dims and denoising
steps and, on resume, the checkpoint's recorded config (architecture, K, K', n_envs, ...) are checked; nothing is
written before they pass. Each iteration's metrics row is on disk before its checkpoint; the divergence guard
checks the rollout's observations and rewards and the update's loss and weight norm before anything is saved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from dppo.algos.advantage import gae
from dppo.algos.distributed import MirroredPPOLearner, make_strategy, scope
from dppo.algos.ppo import PPOBatch, PPOLearner
from dppo.data.normalization import Normalization, check_normalization_dims
from dppo.envs.factory import make_from_config
from dppo.runners.loop import OnlineLoop
from dppo.runners.policy_save import save_policy
from dppo.runners.rollout import as_cond, rollout
from dppo.runners.start import restore, start_run
from dppo.utils import checkpoint as ckpt
from dppo.utils import validate
from dppo.utils.guard import DivergenceGuard, GuardSettings, weight_norm
from dppo.utils.logging import open_run_folder
from dppo.utils.optim import AdamW
from dppo.utils.reward_scaling import RunningRewardScaler
from dppo.utils.scheduler import make_scheduler
from dppo.utils.seeding import generator_states, restore_generators

log = logging.getLogger(__name__)


def with_initial_weights(model: Any) -> Any:
    """Load what the config's ``model.network_path`` names into a freshly built model (constructors do no file
    I/O): a pre-trained policy, or a fine-tuning checkpoint to continue from."""
    if getattr(model, "network_path", None):
        model.load_initial_weights(model.network_path)
    return model


class MinibatchPlan(NamedTuple):
    """What one PPO iteration's update does (the reference v0.5 rule; see ``minibatch_plan``)."""

    env_steps: int  # samples collected per iteration (n_envs x n_steps action chunks)
    minibatches_per_epoch: int
    optimizer_steps: int  # per iteration, before any target_kl early stop
    transitions_per_step: int  # rows scored per optimizer step (denoising transitions for DPPO)


def minibatch_plan(cfg: DictConfig) -> MinibatchPlan:
    """Optimizer steps per iteration and transitions per step of a fine-tuning config.

    ``train.batch_size`` counts env steps (action chunks); a DPPO minibatch carries all K' denoising transitions
    of its env steps. Per epoch: N // batch_size minibatches (remainder dropped); with ``grad_accumulate`` k the
    optimizer steps every k minibatches. Single-step policies (Gaussian, GMM, exact likelihood) score one row per
    env step.
    """
    t = cfg.train
    n = int(cfg.env.n_envs) * int(t.n_steps)
    batch, k = int(t.batch_size), int(t.get("grad_accumulate", 1) or 1)
    single_step = getattr(hydra.utils.get_class(cfg.model._target_), "single_step", True)
    per_sample = 1 if single_step else int(cfg.model.ft_denoising_steps)
    minibatches = max(1, n // batch)
    return MinibatchPlan(n, minibatches, int(t.update_epochs) * max(1, minibatches // k), batch * k * per_sample)


class TrainPPOAgent(OnlineLoop):
    """PPO fine-tuning of a policy in vectorised environments."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        # before building envs or networks: a resume must fit its checkpoint, a base policy the config
        self.seed, self.logdir, self.checkpoint_dir, state = start_run(cfg, "ppo", base_policy=True)
        check_normalization_dims(cfg)
        t = cfg.train
        self.n_train_itr = int(t.n_train_itr)
        self.n_critic_warmup_itr = int(t.get("n_critic_warmup_itr", 0))
        self.n_steps = int(t.n_steps)
        self.gamma, self.gae_lambda = float(t.gamma), float(t.get("gae_lambda", 0.95))
        self.batch_size, self.update_epochs = int(t.batch_size), int(t.update_epochs)
        self.vf_coef, self.ent_coef = float(t.get("vf_coef", 0.5)), float(t.get("ent_coef", 0.0))
        self.target_kl = t.get("target_kl")
        self.val_freq = int(t.get("val_freq", 10))
        self.force_train = bool(t.get("force_train", False))
        self.save_model_freq = int(t.get("save_model_freq", 100))
        self.log_freq = int(t.get("log_freq", 1))
        self.reward_scale_const = float(t.get("reward_scale_const", 1.0))
        self.logprob_batch_size = int(t.get("logprob_batch_size", 10000))
        self.bootstrap_truncated = bool(t.get("bootstrap_truncated", True))
        self.render_freq = int(t.get("render", {}).get("freq", 0) or 0)
        self.render_num = int(t.get("render", {}).get("num", 0) or 0)
        self.plotter = validate.instantiate(t.plotter) if t.get("plotter") else None
        self.act_steps = int(cfg.act_steps)
        self.horizon_steps = int(cfg.horizon_steps)
        self.reward_horizon = int(cfg.get("reward_horizon", self.act_steps))
        env_cfg = cfg.env
        self.n_envs = int(env_cfg.n_envs)
        self.reset_at_iteration = bool(env_cfg.get("reset_at_iteration", True))
        self.success_threshold = float(env_cfg.get("best_reward_threshold_for_success", 1.0))
        self.save_full_obs = bool(env_cfg.get("save_full_observations", False))
        self.venv = make_from_config(env_cfg, self.seed)
        self.normalization = (Normalization.load(cfg.normalization_path) if cfg.get("normalization_path")
                              else None)

        # train.distribute (opt-in): networks and optimizers mirrored, each minibatch's gradients data-parallel
        self.strategy = make_strategy(t.get("distribute"))
        with scope(self.strategy):
            self.model = self.build_model(cfg)
        plan = minibatch_plan(cfg)
        log.info("PPO update: %d optimizer steps per iteration (%d minibatches per epoch), %d transitions each",
                 plan.optimizer_steps, plan.minibatches_per_epoch, plan.transitions_per_step)
        self.actor_scheduler = make_scheduler(float(t.actor_lr), t.get("actor_lr_scheduler"))
        self.critic_scheduler = make_scheduler(float(t.critic_lr), t.get("critic_lr_scheduler"))
        with scope(self.strategy):
            self.actor_optimizer = AdamW(self.model.trainable_actor_variables(), self.actor_scheduler.lr,
                                         float(t.get("actor_weight_decay", 0.0)),
                                         max_grad_norm=t.get("max_grad_norm"), name="actor_optimizer")
            self.critic_optimizer = AdamW(self.model.critic.trainable_variables, self.critic_scheduler.lr,
                                          float(t.get("critic_weight_decay", 0.0)), name="critic_optimizer")
        learner_args = (self.model, self.actor_optimizer, self.critic_optimizer, self.seed,
                        int(t.get("grad_accumulate", 1) or 1), t.get("micro_batch"))
        self.learner = (PPOLearner(*learner_args) if self.strategy is None
                        else MirroredPPOLearner(self.strategy, *learner_args))
        self.reward_scaler = RunningRewardScaler(self.n_envs) if t.get("reward_scale_running", True) else None
        self.itr = 0
        self.env_steps = 0
        self.history: list[dict[str, float]] = []
        self.last_trajectories: list[np.ndarray] = []  # raw state paths of the last rollout, per env
        self.last_states: np.ndarray | None = None  # the same, normalised, (N, T, D)
        if state is not None:
            self.resume(state)
        elif cfg.get("resume", False):
            log.warning("resume=true but no checkpoint in %s; starting from scratch", self.checkpoint_dir)
        self.guard = DivergenceGuard(
            "fine-tuning", "iteration",
            f"an update too large - lower train.actor_lr ({float(t.actor_lr):g}) / train.critic_lr "
            f"({float(t.critic_lr):g}), or set train.max_grad_norm",
            lambda: ckpt.latest_checkpoint(self.checkpoint_dir),
            GuardSettings.from_config(t.get("divergence_guard"), "divergence_guard" in t))
        open_run_folder(cfg, self.logdir)  # every check has passed: from here on the run may write

    def model_kwargs(self, cfg: DictConfig) -> dict[str, Any]:
        """Top-level keys the model block does not set but its class takes (``cond_steps``)."""
        return validate.inherited(cfg, "model", ("cond_steps",), validate.target_accepts(cfg.model._target_))

    def build_model(self, cfg: DictConfig) -> Any:
        """The fine-tuning model; the actor network is built twice (frozen base and trainable copy)."""
        model_cfg = cfg.model
        actor_ft = validate.instantiate(model_cfg.actor)
        return with_initial_weights(validate.instantiate(model_cfg, actor_ft=actor_ft, seed=self.seed,
                                                         reward_horizon=self.reward_horizon,
                                                         **self.model_kwargs(cfg)))

    def trained_variables(self) -> list[tf.Variable]:
        return [*self.model.trainable_actor_variables(), *self.model.critic.trainable_variables]

    # checkpoints -----------------------------------------------------------------------------------------
    def checkpoint_groups(self) -> dict[str, list]:
        return {"network": self.model.network.weights, "actor_ft": self.model.actor_ft.weights,
                "critic": self.model.critic.weights, **self.learner.checkpoint_groups()}

    def save(self) -> Path:
        extra = {f"reward_scaler/{k}": v for k, v in (self.reward_scaler.state() if self.reward_scaler else {}).items()}
        path = ckpt.save_checkpoint(
            ckpt.checkpoint_path(self.checkpoint_dir, self.itr), self.checkpoint_groups(),
            {"itr": self.itr, "env_steps": self.env_steps, **generator_states(self.model),
             **generator_states(self.learner),
             "actor_scheduler_steps": self.actor_scheduler.steps, "critic_scheduler_steps": self.critic_scheduler.steps,
             "ft_denoising_steps": getattr(self.model, "ft_denoising_steps", 0),
             "np_rng": np.random.get_state()[1], **extra, **validate.run_record(self.cfg, "ppo", self.model)})
        # the stand-alone policy of this checkpoint: DPPO keeps the frozen network and the fine-tuned last steps;
        # Gaussian / GMM PPO train the whole network (network is actor_ft)
        ft = self.model.actor_ft if self.model.actor_ft is not self.model.network else None
        save_policy(self.logdir, self.cfg, self.model, self.cfg.model.actor, self.model.network.weights,
                    None if ft is None else ft.weights)
        return path

    def resume(self, state: ckpt.CheckpointState | None = None) -> None:
        state = restore(self.checkpoint_dir, self.checkpoint_groups(), state)
        if state is None:
            return
        self.itr = ckpt.meta(state, "itr", kind=int) + 1
        self.env_steps = ckpt.meta(state, "env_steps", kind=int)
        for holder in (self.model, self.learner):
            restore_generators(holder, lambda key: ckpt.meta(state, key))
        self.actor_scheduler.steps = ckpt.meta(state, "actor_scheduler_steps", kind=int)
        self.critic_scheduler.steps = ckpt.meta(state, "critic_scheduler_steps", kind=int)
        mt = ckpt.meta(state, "np_rng", kind=np.ndarray, shape=(624,))
        np.random.set_state(("MT19937", mt.astype(np.uint32), 0, 0, 0.0))
        if self.reward_scaler is not None:
            self.reward_scaler.load_state({
                "returns": ckpt.meta(state, "reward_scaler/returns", kind=np.ndarray, shape=(self.n_envs,)),
                **{k: ckpt.meta(state, f"reward_scaler/{k}", kind=float) for k in ("mean", "var", "count")}})

    # rollout ---------------------------------------------------------------------------------------------
    def collect(self, obs: dict[str, np.ndarray], firsts0: np.ndarray, deterministic: bool) -> dict[str, Any]:
        value_fn = None if deterministic or not self.bootstrap_truncated else self.learner.values
        return rollout(self.venv, lambda cond: self.model.act(cond, deterministic), obs, firsts0, self.n_steps,
                       self.act_steps, value_fn)

    # update ----------------------------------------------------------------------------------------------
    def prepare_batch(self, ro: dict[str, Any]) -> PPOBatch:
        n_s, n_e = self.n_steps, self.n_envs
        flat = {k: v.reshape(n_s * n_e, *v.shape[2:]) for k, v in ro["obs"].items()}
        samples = ro["samples"].reshape(n_s * n_e, *ro["samples"].shape[2:])
        values, log_probs = [], []
        for start in range(0, n_s * n_e, self.logprob_batch_size):
            sl = slice(start, start + self.logprob_batch_size)
            v, lp = self.learner.score(as_cond({k: x[sl] for k, x in flat.items()}), tf.constant(samples[sl]))
            values.append(v.numpy())
            log_probs.append(lp.numpy())
        values = np.concatenate(values).reshape(n_s, n_e)
        rewards = ro["rewards"]
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(rewards, ro["firsts"][:-1])
        next_value = self.learner.values(as_cond(ro["last_obs"])).numpy()
        adv, returns = gae(self.reward_scale_const * rewards, values, next_value, ro["terminated"].astype(np.float32),
                           self.gamma, self.gae_lambda,
                           ro["reset_after"] if self.bootstrap_truncated else None, ro["final_values"])
        return PPOBatch(as_cond(flat), tf.constant(samples), tf.constant(returns.reshape(-1), tf.float32),
                        tf.constant(values.reshape(-1)), tf.constant(adv.reshape(-1), tf.float32),
                        tf.constant(np.concatenate(log_probs)))

    # the loop's hooks (dppo/runners/loop.py) ---------------------------------------------------------------
    def train_iteration(self, ro: dict[str, Any], itr: int) -> dict[str, float]:
        batch = self.prepare_batch(ro)
        for key in ("values", "log_probs", "returns", "advantages"):
            self.guard.check_finite(itr, f"the rollout's {key.replace('_', '-')}", getattr(batch, key).numpy(),
                                    "the networks scoring the rollout (its observations and rewards were finite)",
                                    self.guard.cause)
        train_actor = itr >= self.n_critic_warmup_itr
        upd = self.learner.update(batch, train_actor, self.batch_size, self.update_epochs, self.vf_coef,
                                  self.ent_coef, self.target_kl)
        self.guard.check_update(itr, upd["loss"], weight_norm(self.trained_variables()),
                                "the PPO update (the rollout it used was finite)")
        ret, val = batch.returns.numpy(), batch.values.numpy()
        if train_actor:
            self.actor_scheduler.step()
            self.actor_optimizer.set_lr(self.actor_scheduler.lr)
        return {**{f"loss/{k}": v for k, v in upd.items()},
                "train/explained_variance": float(1 - np.var(ret - val) / max(np.var(ret), 1e-8))}

    def end_iteration(self, itr: int, trained: bool) -> dict[str, float]:
        self.critic_scheduler.step()
        self.critic_optimizer.set_lr(self.critic_scheduler.lr)
        return {"lr/actor": float(self.actor_optimizer.learning_rate.numpy()),
                "lr/critic": float(self.critic_optimizer.learning_rate.numpy())}


TrainPPODiffusionAgent = TrainPPOAgent
