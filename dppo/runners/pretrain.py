"""Pre-training from demonstrations: AdamW, per-epoch cosine schedule, EMA, checkpoints.

Works for any policy model exposing ``network`` (a Keras layer) and ``loss(actions, cond, net=...)``:
diffusion, Gaussian and GMM policies alike.

Before the first epoch the config, the dataset (against the model's dims) and, on resume, the checkpoint's
recorded config and data shapes are checked; only then is anything written. Each epoch's metrics row is on disk
before the checkpoint that includes it, and a divergence guard stops the run before a blown-up state is saved.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dppo.algos.distributed import make_strategy, pretrain_gradients, scope
from dppo.data.normalization import DatasetError
from dppo.runners.policy_save import save_policy
from dppo.runners.start import restore, start_run
from dppo.utils import checkpoint as ckpt
from dppo.utils import metrics as metrics_names
from dppo.utils.faults import fault_point
from dppo.utils.guard import DivergenceGuard, GuardSettings, weight_norm
from dppo.utils.logging import MetricLogger, open_run_folder, wandb_config
from dppo.utils.optim import AdamW
from dppo.utils.scheduler import make_scheduler
from dppo.utils.seeding import generator_states, restore_generators
from dppo.utils.validate import check_resume, inherited, instantiate, run_record, target_accepts

log = logging.getLogger(__name__)


def clone_network(model, net_cfg: DictConfig) -> keras.layers.Layer:
    """A second network of the same architecture with the same weights as ``model.network``."""
    net = instantiate(net_cfg)
    model.build_network(net)
    for dst, src in zip(net.weights, model.network.weights):
        dst.assign(src)
    return net


class TrainDiffusionAgent:
    """The pre-training loop; ``TrainGaussianAgent`` is the same loop for Gaussian/GMM models."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        # before building anything: refuse a changed architecture / step count at once
        self.seed, self.logdir, self.checkpoint_dir, state = start_run(cfg, "pretrain")
        train = cfg.train
        self.n_epochs = int(train.n_epochs)
        self.batch_size = int(train.batch_size)
        self.save_model_freq = int(train.get("save_model_freq", self.n_epochs))
        self.epoch_start_ema = int(train.get("epoch_start_ema", 20))
        self.update_ema_freq = int(train.get("update_ema_freq", 10))
        self.ema_decay = float(cfg.get("ema", {}).get("decay", 0.995))
        # train.distribute (opt-in): networks and optimizer mirrored, each batch's gradients data-parallel
        self.strategy = make_strategy(train.get("distribute"))
        with scope(self.strategy):
            self.model = instantiate(cfg.model, seed=self.seed,
                                     **inherited(cfg, "model", ("cond_steps",), target_accepts(cfg.model._target_)))
            self.ema_network = clone_network(self.model, cfg.model.network)
        # the data must fit the model: dims are checked when the file is read, not in the compiled epoch
        self.dataset = instantiate(cfg.train_dataset, **{
            **inherited(cfg, "train_dataset", ("horizon_steps", "cond_steps")),
            **{k: int(getattr(self.model, k)) for k in ("obs_dim", "action_dim")
               if k not in cfg.train_dataset and getattr(self.model, k, None) is not None}})
        rgb_shape = getattr(self.model.network, "rgb_shape", None)  # pixel networks: (T_img, C, H, W)
        if rgb_shape is not None and self.dataset.images is not None and \
                tuple(self.dataset.images.shape[1:]) != tuple(rgb_shape[1:]):
            raise DatasetError(f"dataset {self.dataset.path}: images are {tuple(self.dataset.images.shape[1:])} "
                               f"(C, H, W) but the network takes {tuple(rgb_shape[1:])}")
        if state is not None:
            check_resume(cfg, "pretrain", state, state.path, self.data_facts())
        elif cfg.get("resume", False):
            log.warning("resume=true but no checkpoint in %s; starting from scratch", self.checkpoint_dir)
        self.scheduler = make_scheduler(float(train.learning_rate), train.get("lr_scheduler"))
        self.variables = self.model.network.trainable_variables
        with scope(self.strategy):
            self.optimizer = AdamW(self.variables, self.scheduler.lr, float(train.get("weight_decay", 0.0)),
                                   max_grad_norm=train.get("max_grad_norm"))
        self.epoch = 0
        self._train_epoch = tf.function(self._train_epoch_graph)
        if state is not None:
            self.resume(state)
        self.guard = DivergenceGuard(
            "pre-training", "epoch",
            f"an update too large for this data - lower train.learning_rate ({float(train.learning_rate):g}) or set "
            f"train.max_grad_norm", lambda: ckpt.latest_checkpoint(self.checkpoint_dir),
            GuardSettings.from_config(train.get("divergence_guard"), "divergence_guard" in train))
        open_run_folder(cfg, self.logdir)  # every check has passed: from here on the run may write

    def data_facts(self) -> dict:
        """Shapes of the training data, recorded in checkpoints and compared on resume."""
        facts = {"obs_dim": int(self.dataset.states.shape[1]), "action_dim": int(self.dataset.actions.shape[1])}
        if getattr(self.dataset, "images", None) is not None:
            facts["image_shape"] = [int(d) for d in self.dataset.images.shape[1:]]
        return facts

    # ----------------------------------------------------------------------------------------------------
    def _train_epoch_graph(self, order: tf.Tensor) -> tf.Tensor:
        """One epoch over the windows in ``order`` (last partial batch kept), in one compiled call."""
        total, count = tf.constant(0.0), tf.constant(0.0)
        n = tf.size(order)
        for b in tf.range((n + self.batch_size - 1) // self.batch_size):
            actions, cond = self.dataset.gather(order[b * self.batch_size:(b + 1) * self.batch_size])
            if self.strategy is None:
                with tf.GradientTape() as tape:
                    loss = self.model.loss(actions, cond)
                grads = tape.gradient(loss, self.variables)
            else:
                loss, grads = pretrain_gradients(self.strategy, self.model, self.variables, actions, cond)
            self.optimizer.apply(grads)
            total += loss
            count += 1.0
        return total / count

    @tf.function
    def _update_ema(self, reset: tf.Tensor) -> None:
        d = tf.where(reset, 0.0, self.ema_decay)
        for e, w in zip(self.ema_network.weights, self.model.network.weights):
            e.assign(d * e + (1.0 - d) * w)

    # ----------------------------------------------------------------------------------------------------
    def checkpoint_groups(self) -> dict:
        return {"model": self.model.network.weights, "ema": self.ema_network.weights,
                "optimizer": self.optimizer.state}

    def save(self) -> Path:
        path = ckpt.save_checkpoint(ckpt.checkpoint_path(self.checkpoint_dir, self.epoch),
                                    self.checkpoint_groups(),
                                    {"epoch": self.epoch, **generator_states(self.model),
                                     "scheduler_steps": self.scheduler.steps,
                                     **run_record(self.cfg, "pretrain", self.model, self.data_facts())})
        # the stand-alone policy of this checkpoint: the EMA network (Gaussian / GMM: the trained one), as
        # load_policy_weights picks it
        net = self.ema_network if getattr(self.model, "load_ema", True) else self.model.network
        save_policy(self.logdir, self.cfg, self.model, self.cfg.model.network, net.weights)
        return path

    def resume(self, state: ckpt.CheckpointState | None = None) -> None:
        state = restore(self.checkpoint_dir, self.checkpoint_groups(), state)
        if state is None:
            return
        self.epoch = ckpt.meta(state, "epoch", kind=int)
        restore_generators(self.model, lambda key: ckpt.meta(state, key))
        self.scheduler.steps = ckpt.meta(state, "scheduler_steps", kind=int)

    # ----------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        logger = MetricLogger(self.logdir, wandb_config(self.cfg), OmegaConf.to_container(self.cfg, resolve=True))
        logger.truncate(self.epoch)  # rows past the checkpoint resumed from (all rows for a fresh start)
        self.guard.seed([float(r["loss/loss"]) for r in logger.rows if r.get("loss/loss")],
                        [weight_norm(self.variables)])
        start = time.time()
        loss = float(logger.rows[-1]["loss/loss"]) if logger.rows else float("nan")
        bar = tqdm(range(self.epoch + 1, self.n_epochs + 1), desc="pre-train", unit="epoch",
                   initial=self.epoch, total=self.n_epochs, dynamic_ncols=True)
        for epoch in bar:
            self.epoch = epoch
            self.optimizer.set_lr(self.scheduler.lr)
            order = self.dataset.permutation(self.seed * 100003 + epoch)
            with scope(self.strategy):
                loss = float(self._train_epoch(tf.constant(order)))
            self.guard.check_update(epoch, loss, weight_norm(self.variables),
                                    f"the update (the dataset {self.dataset.path} was checked finite when loaded)")
            lr = self.scheduler.lr
            self.scheduler.step()
            if epoch % self.update_ema_freq == 0:
                with scope(self.strategy):
                    self._update_ema(tf.constant(epoch < self.epoch_start_ema))
            logger.log(epoch, {"loss/loss": loss, "lr/actor": lr, metrics_names.WALL: time.time() - start})
            fault_point(f"metrics:{epoch}")
            if epoch % self.save_model_freq == 0 or epoch == self.n_epochs:
                self.save()
            fault_point(f"checkpoint:{epoch}")
            bar.set_postfix(loss=f"{loss:.4f}")
        logger.close()
        return {"loss": loss, "epochs": self.epoch, "wall_time": time.time() - start}


TrainGaussianAgent = TrainDiffusionAgent
