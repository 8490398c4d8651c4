"""Weighted-regression fine-tuning loop: DRWR and DAWR (reference ``train_rwr_diffusion_agent.py``,
``train_awr_diffusion_agent.py``) and any method built the same way.

The loop knows neither method: the model (``model._target_``, e.g. :class:`dppo.algos.rwr.RWRDiffusion` or
:class:`dppo.algos.awr.AWRDiffusion`) acts (``act``) and builds its learner (``model.learner(train, n_envs,
n_steps, seed)``), which owns the optimizers, schedules, any buffer and the compiled update; an
:class:`~dppo.algos.rwr.IterationData` crosses from the runner to it. Per iteration, as the reference:

1. evaluation iteration when ``itr % val_freq == 0`` and not ``force_train``: deterministic sampling, no update;
2. envs reset when ``env.reset_at_iteration`` (or for an evaluation iteration), else they continue;
3. ``n_steps`` action chunks in every env (``dppo.runners.rollout``); episode statistics as the reference counts
   them (``dppo.runners.episodes``), logged as ``train/...`` or ``eval/...`` with the PPO runner's names;
4. training iterations: ``env_steps`` += n_envs x n_steps x act_steps, then ``learner.update``;
5. the learner's LR schedules step (every iteration, as the reference); metrics row, then checkpoint.

Checkpoints (``checkpoint/state_<itr>.npz``, atomic) hold the policy network as "model" (what evaluation and
``model.network_path`` read), the critic, optimizer states, schedule steps, every random stream and the
iteration; a learner with a buffer (DAWR) writes it to ``checkpoint/buffer_<itr>.npz`` just before, and only the
latest buffer file is kept. A resumed run (``resume=true``) therefore continues exactly (with
``env.reset_at_iteration``; otherwise the envs restart from a reset, as in the PPO runner). The pre-trained policy
is loaded as the PPO runner does it: ``model.network_path`` after the model is built.

Reference quirks fixed by the methods are described in dppo/algos/rwr.py and dppo/algos/awr.py (and
docs/baselines.md): notably DAWR's critic loss, which broadcast (B, 1) - (B,) to (B, B) and so regressed every
value towards the batch-mean target; ``model.reference_critic_broadcast: true`` restores it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from dppo.algos.rwr import IterationData
from dppo.data.normalization import Normalization, check_normalization_dims
from dppo.envs.factory import make_from_config
from dppo.runners.loop import OnlineLoop
from dppo.runners.policy_save import save_policy
from dppo.runners.ppo import with_initial_weights
from dppo.runners.rollout import as_cond, rollout
from dppo.runners.start import start_run
from dppo.utils import checkpoint as ckpt
from dppo.utils import validate
from dppo.utils.guard import DivergenceGuard, GuardSettings, weight_norm
from dppo.utils.logging import open_run_folder
from dppo.utils.seeding import generator_states, restore_generators

log = logging.getLogger(__name__)

KIND = "weighted"  # the config schema (dppo.utils.validate)


def buffer_path(checkpoint_dir: Path, itr: int) -> Path:
    return Path(checkpoint_dir) / f"buffer_{itr}.npz"


class TrainWeightedRegressionAgent(OnlineLoop):
    """Fine-tuning by weighted regression in vectorised environments (see the module docstring)."""

    config_kind = KIND  # the schema its configs are checked against

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        # before building envs or networks: a resume must fit its checkpoint, a base policy the config
        self.seed, self.logdir, self.checkpoint_dir, state = start_run(cfg, KIND, base_policy=True)
        check_normalization_dims(cfg)
        t = cfg.train
        self.n_train_itr = int(t.n_train_itr)
        self.n_steps = int(t.n_steps)
        self.val_freq = int(t.get("val_freq", 10))
        self.force_train = bool(t.get("force_train", False))
        self.save_model_freq = int(t.get("save_model_freq", 100))
        self.log_freq = int(t.get("log_freq", 1))
        self.render_freq = int((t.get("render") or {}).get("freq", 0) or 0)
        self.render_num = int((t.get("render") or {}).get("num", 0) or 0)
        self.plotter = validate.instantiate(t.plotter) if t.get("plotter") else None
        self.act_steps = int(cfg.act_steps)
        env_cfg = cfg.env
        self.n_envs = int(env_cfg.n_envs)
        self.reset_at_iteration = bool(env_cfg.get("reset_at_iteration", True))
        self.success_threshold = float(env_cfg.get("best_reward_threshold_for_success", 1.0))
        self.venv = make_from_config(env_cfg, self.seed)
        self.normalization = (Normalization.load(cfg.normalization_path) if cfg.get("normalization_path")
                              else None)
        kwargs = validate.inherited(cfg, "model", ("cond_steps",), validate.target_accepts(cfg.model._target_))
        self.model = with_initial_weights(validate.instantiate(cfg.model, seed=self.seed, **kwargs))
        if not callable(getattr(self.model, "learner", None)):
            raise validate.ConfigError(f"model._target_: {cfg.model._target_} does not build a weighted-regression "
                                       f"learner (it has no learner(train, n_envs, n_steps, seed) method)")
        self.learner = self.model.learner(validate.as_plain(t), n_envs=self.n_envs, n_steps=self.n_steps,
                                          seed=self.seed)
        self.itr = 0
        self.env_steps = 0
        self.history: list[dict[str, float]] = []
        self.last_states: np.ndarray | None = None
        self.last_trajectories: list[np.ndarray] = []
        if state is not None:
            self.resume(state)
        elif cfg.get("resume", False):
            log.warning("resume=true but no checkpoint in %s; starting from scratch", self.checkpoint_dir)
        lr_keys = " / ".join(f"train.{k}" for k in ("lr", "actor_lr", "critic_lr") if k in t)
        self.guard = DivergenceGuard("fine-tuning", "iteration",
                                     f"an update too large - lower {lr_keys}, or set train.max_grad_norm",
                                     lambda: ckpt.latest_checkpoint(self.checkpoint_dir),
                                     GuardSettings.from_config(t.get("divergence_guard"), "divergence_guard" in t))
        open_run_folder(cfg, self.logdir)  # every check has passed: from here on the run may write

    @property
    def network_cfg(self) -> DictConfig:
        """The config block of the fine-tuned network (``model.network`` for DRWR, ``model.actor`` for DAWR)."""
        return self.cfg.model.get("network") or self.cfg.model.actor

    # checkpoints -----------------------------------------------------------------------------------------
    def save(self) -> Path:
        buffer = self.learner.buffer_state()
        extra: dict[str, Any] = {}
        if buffer:  # first the buffer, then the checkpoint that names it; older buffers go once it is durable
            path = ckpt.write_npz_atomic(buffer_path(self.checkpoint_dir, self.itr), buffer)
            extra["buffer_file"] = path.name
        path = ckpt.save_checkpoint(
            ckpt.checkpoint_path(self.checkpoint_dir, self.itr), self.learner.checkpoint_groups(),
            {"itr": self.itr, "env_steps": self.env_steps, **generator_states(self.model),
             **generator_states(self.learner), **self.learner.scalar_state(), **extra,
             **validate.run_record(self.cfg, KIND, self.model)})
        if buffer:
            for old in self.checkpoint_dir.glob("buffer_*.npz"):
                if old.name != extra["buffer_file"]:
                    old.unlink(missing_ok=True)
        save_policy(self.logdir, self.cfg, self.model, self.network_cfg, self.model.network.weights)
        return path

    def resume(self, state: ckpt.CheckpointState) -> None:
        ckpt.restore_groups(state, self.learner.checkpoint_groups())
        self.itr = ckpt.meta(state, "itr", kind=int) + 1
        self.env_steps = ckpt.meta(state, "env_steps", kind=int)
        for holder in (self.model, self.learner):
            restore_generators(holder, lambda key: ckpt.meta(state, key))
        self.learner.load_scalar_state(lambda key: ckpt.meta(state, key, kind=int))
        name = ckpt.meta(state, "buffer_file")
        if name is not None:
            path = self.checkpoint_dir / str(name)
            if not path.is_file():
                log.warning("the buffer of %s (%s) is missing: resuming with an empty buffer", state.path, path)
                return
            try:
                with np.load(path, allow_pickle=False) as f:
                    self.learner.load_buffer_state({k: f[k] for k in f.files})
            except Exception as e:  # unreadable or mismatched file: say which, and that it can be moved aside
                raise ckpt.CheckpointError(f"buffer {path} could not be restored ({type(e).__name__}: {e}); move it "
                                           f"away to resume with an empty buffer") from e

    # rollout ---------------------------------------------------------------------------------------------
    def collect(self, obs: dict[str, np.ndarray], firsts0: np.ndarray, deterministic: bool) -> dict[str, Any]:
        return rollout(self.venv, lambda cond: self.model.act(cond, deterministic), obs, firsts0, self.n_steps,
                       self.act_steps)

    @staticmethod
    def iteration_data(ro: dict[str, Any]) -> IterationData:
        return IterationData(as_cond(ro["obs"]), tf.constant(ro["samples"]), tf.constant(ro["rewards"]),
                             tf.constant(ro["terminated"].astype(np.float32)), tf.constant(ro["firsts"]))

    # the loop's hooks (dppo/runners/loop.py) ---------------------------------------------------------------
    def trained_variables(self) -> list:
        return self.learner.trained_variables()

    def train_iteration(self, ro: dict[str, Any], itr: int) -> dict[str, float]:
        upd = self.learner.update(self.iteration_data(ro), itr)
        loss = upd.get("loss")
        self.guard.check_update(itr, loss if loss is not None and np.isfinite(loss) else None,
                                weight_norm(self.learner.trained_variables()),
                                "the weighted-regression update (the rollout it used was finite)")
        if "critic_loss" in upd and not np.isfinite(upd["critic_loss"]):
            self.guard.fail(itr, f"the critic loss is {upd['critic_loss']}", "the critic update", self.guard.cause)
        metrics = {}
        if "explained_variance" in upd:
            metrics["train/explained_variance"] = upd.pop("explained_variance")
        return {**metrics, **{f"loss/{k}": v for k, v in upd.items()}}

    def end_iteration(self, itr: int, trained: bool) -> dict[str, float]:
        self.learner.end_iteration()
        return {f"lr/{k}": v for k, v in self.learner.learning_rates().items()}


TrainRWRDiffusionAgent = TrainWeightedRegressionAgent
TrainAWRDiffusionAgent = TrainWeightedRegressionAgent
