"""Metrics to TensorBoard and a CSV (one row per logged step, every key ever logged), optionally W&B."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import tensorflow as tf

log = logging.getLogger(__name__)


def save_config(cfg: Any, log_dir: str | Path) -> None:
    """Write the resolved run config to ``<log_dir>/config.yaml`` (used by ``dppo export``)."""
    from omegaconf import OmegaConf
    path = Path(log_dir)
    path.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path / "config.yaml", resolve=True)


class MetricLogger:
    """``log(step, metrics)`` writes TensorBoard scalars under ``<dir>/tensorboard`` and ``<dir>/metrics.csv``."""

    def __init__(self, log_dir: str | Path, wandb_cfg: dict | None = None, config: dict | None = None):
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if self.csv_path.exists():  # resumed run: keep what was logged
            with open(self.csv_path, newline="") as f:
                self.rows = [dict(r) for r in csv.DictReader(f)]
        self.keys: list[str] = list(self.rows[0].keys()) if self.rows else ["step"]
        self.writer = tf.summary.create_file_writer(str(self.dir / "tensorboard"))
        self.wandb = None
        if wandb_cfg:
            try:
                import wandb  # optional dependency: pip install -e .[wandb]
            except ImportError:
                log.warning("config has a wandb block but wandb is not installed; logging to TensorBoard/CSV "
                            "only (pass wandb=null to silence this)")
                return
            self.wandb = wandb.init(project=wandb_cfg.get("project"), entity=wandb_cfg.get("entity"),
                                    name=wandb_cfg.get("run"), config=config, dir=str(self.dir))

    def truncate(self, step: int) -> None:
        """Drop rows logged after ``step`` (when resuming from an earlier checkpoint)."""
        self.rows = [r for r in self.rows if float(r["step"]) <= step]
        self._write_csv()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        with self.writer.as_default(step=step):
            for k, v in clean.items():
                if math.isfinite(v):
                    tf.summary.scalar(k, v)
        self.writer.flush()
        new = [k for k in clean if k not in self.keys]
        self.keys += new
        self.rows.append({"step": step, **clean})
        if new:
            self._write_csv()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, self.keys).writerow(self.rows[-1])
        if self.wandb is not None:
            self.wandb.log(clean, step=step)

    def _write_csv(self) -> None:
        tmp = self.csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, self.keys)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.csv_path)

    def close(self) -> None:
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def wandb_config(cfg: Any) -> dict | None:
    """The run config's ``wandb`` block as a plain dict for :class:`MetricLogger` (None when absent or null)."""
    from omegaconf import OmegaConf
    w = cfg.get("wandb")
    return OmegaConf.to_container(w, resolve=True) if w else None
