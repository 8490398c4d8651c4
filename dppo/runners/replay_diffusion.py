"""The replay-based fine-tuning loop of the diffusion baselines (DIPO, DQL, QSM, IDQL; reference
``agent/finetune/train_{dipo,dql,qsm,idql}_diffusion_agent.py``). It knows no method by name: the model acts
(``model.act``) and updates (``model.update``, many minibatches in one compiled call); what differs between the
methods lives in their modules under ``dppo/algos``.

Per iteration:

1. eval iteration when ``itr % val_freq == 0`` (unless ``train.force_train``): envs reset, deterministic acting,
   no data stored and no update; otherwise the envs continue from the previous iteration (reset when
   ``env.reset_at_iteration``);
2. ``n_steps`` vector-env steps of action chunks (the first ``act_steps`` actions executed);
3. train iterations store every transition (obs, executed chunk, ``scale_reward_factor`` x reward, terminated,
   next obs - the episode's final observation where the env reset itself after a truncation) in the replay
   buffer (FIFO, ``buffer_size`` transitions), then run
   num_batch = int(n_steps * n_envs / batch_size * replay_ratio) updates, the actor's part only from iteration
   ``n_critic_warmup_itr`` on;
4. both learning-rate schedules step every iteration (as the reference's baselines do), metrics are logged
   (``env_steps``, ``train/*`` or ``eval/*``, ``loss/*``, ``critic/q`` (mean Q1 of the last minibatch),
   ``lr/*``, ``time/*``, ``buffer_size``), and every
   ``save_model_freq`` iterations (and at the last) the checkpoint, the replay buffer and the stand-alone policy
   file are written.

Exact resume: ``state_<itr>.npz`` holds every network, target, optimizer state and random generator;
``replay_<itr>.npz`` (written just before it) the buffer and its sampler. Older buffer files are removed once a
newer checkpoint is on disk, so the buffer of the latest checkpoint always exists. As with the PPO runner, envs
are not saved: a resumed run restarts its episodes (bit-exact continuation when ``env.reset_at_iteration``).

``train.buffer_size`` counts transitions. The reference's QSM and IDQL configs counted vector steps of all envs
(25000 x 40 envs for gym), its DIPO and DQL configs transitions (1e6); the shipped configs state QSM's and IDQL's
sizes as ``steps x n_envs``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from dppo.algos.replay_common import METHOD_TRAIN_KEYS
from dppo.data.normalization import check_normalization_dims
from dppo.envs.factory import make_from_config
from dppo.runners.loop import OnlineLoop
from dppo.runners.policy_save import save_policy
from dppo.runners.ppo import with_initial_weights
from dppo.runners.replay import ReplayBuffer
from dppo.runners.rollout import rollout
from dppo.runners.start import start_run
from dppo.utils import checkpoint as ckpt
from dppo.utils import validate
from dppo.utils.guard import DivergenceGuard, GuardSettings, weight_norm
from dppo.utils.logging import open_run_folder
from dppo.utils.scheduler import make_scheduler
from dppo.utils.seeding import generator_states, restore_generators

log = logging.getLogger(__name__)

KIND = "replay"


def buffer_path(checkpoint_dir: Path, itr: int) -> Path:
    return Path(checkpoint_dir) / f"replay_{itr}.npz"


def num_batch(cfg: DictConfig) -> int:
    """Updates per train iteration: int(n_steps * n_envs / batch_size * replay_ratio), at least 1."""
    t = cfg.train
    return max(1, int(int(t.n_steps) * int(cfg.env.n_envs) / int(t.batch_size) * float(t.replay_ratio)))


def target_networks(model_cfg: DictConfig) -> dict[str, Any]:
    """A second instance of ``model.<block>`` for every ``<block>_target`` argument the model class takes (its
    Polyak target copies: ``critic_target``, DIPO's ``actor_target``, IDQL's ``critic_q_target``)."""
    names = validate.accepted_kwargs(hydra.utils.get_class(model_cfg._target_))
    return {name: validate.instantiate(model_cfg[name[: -len("_target")]]) for name in sorted(names)
            if name.endswith("_target") and name[: -len("_target")] in model_cfg}


class TrainReplayDiffusionAgent(OnlineLoop):
    """Fine-tuning of a pre-trained diffusion policy with a replay-based method (the model's class)."""

    config_kind = KIND  # the schema its configs are checked against
    guard_loss_key = "loss/critic"

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.seed, self.logdir, self.checkpoint_dir, state = start_run(cfg, KIND, base_policy=True)
        check_normalization_dims(cfg)
        t, env_cfg = cfg.train, cfg.env
        self.n_train_itr = int(t.n_train_itr)
        self.n_critic_warmup_itr = int(t.get("n_critic_warmup_itr", 0))
        self.n_steps = int(t.n_steps)
        self.batch_size = int(t.batch_size)
        self.num_batch = num_batch(cfg)
        self.scale_reward_factor = float(t.get("scale_reward_factor", 1.0))
        self.val_freq = int(t.get("val_freq", 10))
        self.force_train = bool(t.get("force_train", False))
        self.save_model_freq = int(t.get("save_model_freq", 100))
        self.log_freq = int(t.get("log_freq", 1))
        self.act_steps = int(cfg.act_steps)
        self.n_envs = int(env_cfg.n_envs)
        self.reset_at_iteration = bool(env_cfg.get("reset_at_iteration", True))
        self.success_threshold = float(env_cfg.get("best_reward_threshold_for_success", 1.0))
        self.venv = make_from_config(env_cfg, self.seed)

        self.model = self.build_model(cfg)
        obs_shape = (int(cfg.cond_steps), int(cfg.obs_dim))
        self.buffer = ReplayBuffer(int(t.buffer_size), obs_shape, (self.act_steps, int(cfg.action_dim)), self.seed)
        self.actor_scheduler = make_scheduler(float(t.actor_lr), t.get("actor_lr_scheduler"))
        self.critic_scheduler = make_scheduler(float(t.critic_lr), t.get("critic_lr_scheduler"))
        self.set_lrs()
        self.itr = 0
        self.env_steps = 0
        self.history: list[dict[str, float]] = []
        if state is not None:
            self.resume(state)
        elif cfg.get("resume", False):
            log.warning("resume=true but no checkpoint in %s; starting from scratch", self.checkpoint_dir)
        self.guard = DivergenceGuard(
            type(self.model).__name__, "iteration",
            f"an update too large - lower train.actor_lr ({float(t.actor_lr):g}) / train.critic_lr "
            f"({float(t.critic_lr):g}), or train.scale_reward_factor",
            lambda: ckpt.latest_checkpoint(self.checkpoint_dir),
            GuardSettings.from_config(t.get("divergence_guard"), "divergence_guard" in t))
        open_run_folder(cfg, self.logdir)  # every check has passed: from here on the run may write

    # building --------------------------------------------------------------------------------------------
    def build_model(self, cfg: DictConfig) -> Any:
        """The model block, plus the train.* method keys its class takes (gamma, lrs, eta, critic_tau, ...)."""
        model_cfg = cfg.model
        accepts = validate.target_accepts(model_cfg._target_)
        unused = [k for k in METHOD_TRAIN_KEYS if k in cfg.train and not accepts(k)]
        if unused:
            raise validate.ConfigError("; ".join(f"train.{k}: not a setting of {model_cfg._target_}" for k in unused))
        kwargs = {k: cfg.train[k] for k in METHOD_TRAIN_KEYS
                  if k in cfg.train and accepts(k) and k not in model_cfg}
        kwargs.update(validate.inherited(cfg, "model", ("cond_steps",), accepts))
        kwargs.update(target_networks(model_cfg))
        return with_initial_weights(validate.instantiate(model_cfg, seed=self.seed, **kwargs))

    def set_lrs(self) -> None:
        for name, opt in self.model.optimizers().items():
            opt.set_lr(self.actor_scheduler.lr if name == "actor" else self.critic_scheduler.lr)

    # checkpoints -----------------------------------------------------------------------------------------
    def save(self) -> Path:
        self.buffer.save(buffer_path(self.checkpoint_dir, self.itr), {"itr": self.itr})
        path = ckpt.save_checkpoint(
            ckpt.checkpoint_path(self.checkpoint_dir, self.itr), self.model.checkpoint_groups(),
            {"itr": self.itr, "env_steps": self.env_steps, **generator_states(self.model),
             "actor_scheduler_steps": self.actor_scheduler.steps, "critic_scheduler_steps": self.critic_scheduler.steps,
             **validate.run_record(self.cfg, KIND, self.model)})
        for old in self.checkpoint_dir.glob("replay_*.npz"):  # the latest checkpoint's buffer is kept
            if old.name != buffer_path(self.checkpoint_dir, self.itr).name:
                old.unlink(missing_ok=True)
        save_policy(self.logdir, self.cfg, self.model, self.cfg.model.actor, self.model.acting_network.weights)
        return path

    def resume(self, state: ckpt.CheckpointState) -> None:
        ckpt.restore_groups(state, self.model.checkpoint_groups())
        itr = ckpt.meta(state, "itr", kind=int)
        self.itr = itr + 1
        self.env_steps = ckpt.meta(state, "env_steps", kind=int)
        restore_generators(self.model, lambda key: ckpt.meta(state, key))
        self.actor_scheduler.steps = ckpt.meta(state, "actor_scheduler_steps", kind=int)
        self.critic_scheduler.steps = ckpt.meta(state, "critic_scheduler_steps", kind=int)
        self.set_lrs()
        path = buffer_path(self.checkpoint_dir, itr)
        if not path.is_file():
            raise ckpt.CheckpointError(f"{state.path} has no replay buffer beside it ({path.name}); the run cannot "
                                       f"continue exactly - start a new run from its weights (model.network_path)")
        try:
            self.buffer.load(path)
        except Exception as e:  # unreadable or mismatched file: say which
            raise ckpt.CheckpointError(f"replay buffer {path} could not be restored ({type(e).__name__}: {e})") from e
        log.info("resumed at iteration %d (%d transitions in the buffer)", self.itr, len(self.buffer))

    # one iteration's pieces ------------------------------------------------------------------------------
    def act(self, cond: dict[str, tf.Tensor], deterministic: bool) -> tuple[tf.Tensor, tf.Tensor]:
        chunk = self.model.act(cond, deterministic)
        return chunk, chunk[:, : self.act_steps]

    def store(self, ro: dict[str, Any]) -> None:
        """Every transition of the rollout, step-major (the order the reference appends them)."""
        flat = lambda x: x.reshape(self.n_steps * self.n_envs, *x.shape[2:])  # noqa: E731
        self.buffer.add(flat(ro["obs"]["state"]), flat(ro["samples"]),
                        flat(ro["rewards"] * self.scale_reward_factor), flat(ro["next_obs"]["state"]),
                        flat(ro["terminated"].astype(np.float32)))

    # the loop's hooks (dppo/runners/loop.py) ---------------------------------------------------------------
    def trained_variables(self) -> list:
        return self.model.trained_variables()

    def collect(self, obs: dict[str, np.ndarray], firsts0: np.ndarray, deterministic: bool) -> dict[str, Any]:
        return rollout(self.venv, lambda c: self.act(c, deterministic), obs, firsts0, self.n_steps, self.act_steps,
                       keep_next_obs=not deterministic)

    def train_iteration(self, ro: dict[str, Any], itr: int) -> dict[str, float]:
        self.store(ro)
        upd = self.model.update(self.buffer.push(), self.num_batch, self.batch_size, itr >= self.n_critic_warmup_itr)
        self.buffer.pull(self.model.buffer_writes)
        self.guard.check_update(itr, upd["critic"], weight_norm(self.model.trained_variables()),
                                f"the {type(self.model).__name__} update (the rollout it used was finite)")
        return {(f"critic/{k}" if k == "q" else f"loss/{k}"): v for k, v in upd.items()}

    def end_iteration(self, itr: int, trained: bool) -> dict[str, float]:
        self.actor_scheduler.step()
        self.critic_scheduler.step()
        metrics = {"buffer_size": len(self.buffer),
                   "lr/actor": float(self.model.actor_optimizer.learning_rate.numpy()),
                   "lr/critic": float(self.model.critic_optimizer.learning_rate.numpy())}
        self.set_lrs()
        return metrics


TrainDIPODiffusionAgent = TrainReplayDiffusionAgent
TrainDQLDiffusionAgent = TrainReplayDiffusionAgent
TrainQSMDiffusionAgent = TrainReplayDiffusionAgent
TrainIDQLDiffusionAgent = TrainReplayDiffusionAgent
