"""Metrics to TensorBoard and a CSV (one row per logged step, every key ever logged), optionally W&B.

The CSV is the record a resumed run continues: each row is flushed and fsynced before ``log`` returns (the
runners log a step before writing the checkpoint that includes it), a half-written last row left by a killed
process is dropped when the file is opened again, and ``truncate`` removes rows past the step a run resumes from.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

import tensorflow as tf

log = logging.getLogger(__name__)


def save_config(cfg: Any, log_dir: str | Path, name: str = "config.yaml", resolve: bool = True) -> Path:
    """Write the run config to ``<log_dir>/<name>`` atomically (``config.yaml`` is used by ``dppo export``).
    The runners call this only once every check of the run has passed."""
    from omegaconf import OmegaConf
    return write_text_atomic(Path(log_dir) / name, OmegaConf.to_yaml(cfg, resolve=resolve))


def open_run_folder(cfg: Any, log_dir: str | Path) -> None:
    """Once every check of a run has passed: remove the temporary files a killed run left in its folder
    (``checkpoint/``, the folder itself, ``.hydra/``) and write its ``config.yaml``."""
    from dppo.utils.checkpoint import remove_stale_temporaries

    log_dir = Path(log_dir)
    for folder in (log_dir / "checkpoint", log_dir, log_dir / ".hydra"):
        remove_stale_temporaries(folder)
    save_config(cfg, log_dir)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync and rename; an ``OSError`` names ``path``."""
    from dppo.utils.checkpoint import fsync_dir, raise_with_path

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise_with_path(e, path)
    return path


def read_metrics(path: str | Path) -> tuple[list[str], list[dict[str, str]], int]:
    """(header, rows, number of dropped lines) of a metrics CSV, without a half-written last line (no line end:
    the process was killed while appending it) or rows of the wrong length or without a numeric step."""
    text = Path(path).read_text(errors="replace")
    lines = text.splitlines(keepends=True)
    dropped = 0
    if lines and not lines[-1].endswith("\n"):
        lines, dropped = lines[:-1], 1
    records = list(csv.reader(io.StringIO("".join(lines))))
    if not records:
        return [], [], dropped
    header, rows = records[0], []
    for record in records[1:]:
        try:
            ok = len(record) == len(header) and math.isfinite(float(record[0]))
        except ValueError:
            ok = False
        if ok:
            rows.append(dict(zip(header, record)))
        else:
            dropped += 1
    return header, rows, dropped


class MetricLogger:
    """``log(step, metrics)`` writes TensorBoard scalars under ``<dir>/tensorboard`` and ``<dir>/metrics.csv``."""

    def __init__(self, log_dir: str | Path, wandb_cfg: dict | None = None, config: dict | None = None):
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "metrics.csv"
        self.csv_path.with_name(self.csv_path.name + ".tmp").unlink(missing_ok=True)  # of a killed rewrite
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = ["step"]
        if self.csv_path.exists():  # resumed run: keep what was logged (the runner truncates to its checkpoint)
            header, self.rows, dropped = read_metrics(self.csv_path)
            self.keys = header or ["step"]
            if dropped:
                log.warning("%s: dropped %d incomplete row(s) (a killed process was writing them)", self.csv_path,
                            dropped)
                self._write_csv()
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
        """Drop rows logged after ``step``: the runner resumes from the checkpoint of ``step`` (-1 or 0: a fresh
        start) and logs the later steps again."""
        kept = [r for r in self.rows if float(r["step"]) <= step]
        if len(kept) != len(self.rows):
            log.info("%s: removing %d row(s) after step %d (the run continues from its checkpoint of step %d)",
                     self.csv_path, len(self.rows) - len(kept), step, step)
            self.rows = kept
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
        if new or not self.csv_path.exists():
            self._write_csv()
        else:  # durable before the runner writes the checkpoint that includes this step
            try:
                with open(self.csv_path, "a", newline="") as f:
                    csv.DictWriter(f, self.keys).writerow(self.rows[-1])
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                from dppo.utils.checkpoint import raise_with_path
                raise_with_path(e, self.csv_path)
        if self.wandb is not None:
            self.wandb.log(clean, step=step)

    def _write_csv(self) -> None:
        out = io.StringIO()
        w = csv.DictWriter(out, self.keys)
        w.writeheader()
        w.writerows(self.rows)
        write_text_atomic(self.csv_path, out.getvalue())

    def close(self) -> None:
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def wandb_config(cfg: Any) -> dict | None:
    """The run config's ``wandb`` block as a plain dict for :class:`MetricLogger` (None when absent or null)."""
    from omegaconf import OmegaConf
    w = cfg.get("wandb")
    return OmegaConf.to_container(w, resolve=True) if w else None
