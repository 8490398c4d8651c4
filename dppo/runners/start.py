"""What every training runner does first, before it builds anything: check the config, seed, find the run
folder, and (with ``resume``) the checkpoint to continue from, refused at once when it does not fit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig

from dppo.utils import checkpoint as ckpt
from dppo.utils import validate
from dppo.utils.precision import set_policy
from dppo.utils.seeding import seed_everything

log = logging.getLogger(__name__)


class RunStart(NamedTuple):
    seed: int
    logdir: Path
    checkpoint_dir: Path
    state: ckpt.CheckpointState | None  # the checkpoint to resume from, already checked against the config


def start_run(cfg: DictConfig, kind: str, base_policy: bool = False) -> RunStart:
    """Validate ``cfg`` against the ``kind`` schema (``dppo.utils.validate``), seed everything, set the
    precision policy (``mixed_precision``, :mod:`dppo.utils.precision`), and, when
    ``resume`` is true, load and check the latest checkpoint of ``<logdir>/checkpoint``; with ``base_policy``
    (fine-tuning), a fresh run's pre-trained checkpoint (``base_policy_path`` / ``model.network_path``) is
    checked against the config too."""
    validate.validate_config(cfg, kind)
    seed = int(cfg.get("seed", 42))
    seed_everything(seed)
    set_policy(cfg.get("mixed_precision"))  # the networks' dtype policy, before any is built (float32 unless opted in)
    logdir = Path(cfg.logdir)
    checkpoint_dir = logdir / "checkpoint"
    state = ckpt.latest_state(checkpoint_dir) if cfg.get("resume", False) else None
    if state is not None:
        validate.check_resume(cfg, kind, state, state.path)
    base = (cfg.get("base_policy_path") or cfg.model.get("network_path")) if base_policy else None
    if base and state is None and Path(base).is_file():
        validate.check_base_checkpoint(cfg, base)
    return RunStart(seed, logdir, checkpoint_dir, state)


def restore(checkpoint_dir: Path, groups: dict[str, list[Any]],
            state: ckpt.CheckpointState | None = None) -> ckpt.CheckpointState | None:
    """Restore ``groups`` from ``state`` (default: the latest checkpoint); None, with a warning, when there is
    no checkpoint to resume from."""
    state = state if state is not None else ckpt.latest_state(checkpoint_dir)
    if state is None:
        log.warning("resume=true but no checkpoint in %s; starting from scratch", checkpoint_dir)
        return None
    ckpt.restore_groups(state, groups)
    return state
