"""Pre-training from demonstrations: AdamW, per-epoch cosine schedule, EMA, checkpoints.

Works for any policy model exposing ``network`` (a Keras layer) and ``loss(actions, cond, net=...)``:
diffusion, Gaussian and GMM policies alike.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from dppo.utils import checkpoint as ckpt
from dppo.utils.logging import MetricLogger, save_config, wandb_config
from dppo.utils.optim import AdamW
from dppo.utils.scheduler import make_scheduler
from dppo.utils.seeding import generator_states, restore_generators, seed_everything

log = logging.getLogger(__name__)


def clone_network(model, net_cfg: DictConfig) -> keras.layers.Layer:
    """A second network of the same architecture with the same weights as ``model.network``."""
    net = hydra.utils.instantiate(net_cfg)
    model.build_network(net)
    for dst, src in zip(net.weights, model.network.weights):
        dst.assign(src)
    return net


class TrainDiffusionAgent:
    """The pre-training loop; ``TrainGaussianAgent`` is the same loop for Gaussian/GMM models."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.seed = int(cfg.get("seed", 42))
        seed_everything(self.seed)
        self.logdir = Path(cfg.logdir)
        save_config(cfg, self.logdir)
        self.checkpoint_dir = self.logdir / "checkpoint"
        train = cfg.train
        self.n_epochs = int(train.n_epochs)
        self.batch_size = int(train.batch_size)
        self.save_model_freq = int(train.get("save_model_freq", self.n_epochs))
        self.epoch_start_ema = int(train.get("epoch_start_ema", 20))
        self.update_ema_freq = int(train.get("update_ema_freq", 10))
        self.ema_decay = float(cfg.get("ema", {}).get("decay", 0.995))
        self.model = hydra.utils.instantiate(cfg.model, seed=self.seed)
        self.ema_network = clone_network(self.model, cfg.model.network)
        self.dataset = hydra.utils.instantiate(cfg.train_dataset)
        self.scheduler = make_scheduler(float(train.learning_rate), train.get("lr_scheduler"))
        self.variables = self.model.network.trainable_variables
        self.optimizer = AdamW(self.variables, self.scheduler.lr, float(train.get("weight_decay", 0.0)),
                               max_grad_norm=train.get("max_grad_norm"))
        self.epoch = 0
        self._train_epoch = tf.function(self._train_epoch_graph)
        if cfg.get("resume", False):
            self.resume()

    # ----------------------------------------------------------------------------------------------------
    def _train_epoch_graph(self, order: tf.Tensor) -> tf.Tensor:
        """One epoch over the windows in ``order`` (last partial batch kept), in one compiled call."""
        total, count = tf.constant(0.0), tf.constant(0.0)
        n = tf.size(order)
        for b in tf.range((n + self.batch_size - 1) // self.batch_size):
            actions, cond = self.dataset.gather(order[b * self.batch_size:(b + 1) * self.batch_size])
            with tf.GradientTape() as tape:
                loss = self.model.loss(actions, cond)
            self.optimizer.apply(tape.gradient(loss, self.variables))
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
        return ckpt.save_checkpoint(ckpt.checkpoint_path(self.checkpoint_dir, self.epoch),
                                    self.checkpoint_groups(),
                                    {"epoch": self.epoch, **generator_states(self.model),
                                     "scheduler_steps": self.scheduler.steps})

    def resume(self) -> None:
        state = ckpt.restore_latest(self.checkpoint_dir, self.checkpoint_groups())
        if state is None:
            return
        self.epoch = int(ckpt.meta(state, "epoch"))
        restore_generators(self.model, lambda key: ckpt.meta(state, key))
        self.scheduler.steps = int(ckpt.meta(state, "scheduler_steps"))

    # ----------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        logger = MetricLogger(self.logdir, wandb_config(self.cfg), OmegaConf.to_container(self.cfg, resolve=True))
        if self.epoch:
            logger.truncate(self.epoch)
        start = time.time()
        loss = float(logger.rows[-1]["loss"]) if logger.rows else float("nan")
        bar = tqdm(range(self.epoch + 1, self.n_epochs + 1), desc="pre-train", unit="epoch",
                   initial=self.epoch, total=self.n_epochs, dynamic_ncols=True)
        for epoch in bar:
            self.epoch = epoch
            self.optimizer.set_lr(self.scheduler.lr)
            order = self.dataset.permutation(self.seed * 100003 + epoch)
            loss = float(self._train_epoch(tf.constant(order)))
            if not np.isfinite(loss):
                raise FloatingPointError(f"pre-training loss is {loss} at epoch {epoch}; lower "
                                         f"train.learning_rate or check the dataset {self.dataset.path}")
            lr = self.scheduler.lr
            self.scheduler.step()
            if epoch % self.update_ema_freq == 0:
                self._update_ema(tf.constant(epoch < self.epoch_start_ema))
            if epoch % self.save_model_freq == 0 or epoch == self.n_epochs:
                self.save()
            logger.log(epoch, {"loss": loss, "lr": lr, "wall_time": time.time() - start})
            bar.set_postfix(loss=f"{loss:.4f}")
        logger.close()
        return {"loss": loss, "epochs": self.epoch, "wall_time": time.time() - start}


TrainGaussianAgent = TrainDiffusionAgent
