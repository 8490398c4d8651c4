"""Checkpoints as single ``.npz`` files, written atomically (temp file + rename).

A checkpoint maps group names ("model", "ema", "actor_ft", "critic", "optimizer/actor", ...) to the ordered
weight lists of the corresponding Keras layers / optimizers, plus scalar metadata under "meta/". Loading
checks counts and shapes and names the file and the weight on a mismatch.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit the network it is loaded into."""


def save_checkpoint(path: str | Path, groups: dict[str, Sequence[tf.Variable]],
                    meta: dict[str, Any] | None = None) -> Path:
    """Write ``groups`` of variables and ``meta`` scalars/arrays to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for group, variables in groups.items():
        for i, v in enumerate(variables):
            arrays[f"{group}/{i:04d}"] = v.numpy()
    for key, value in (meta or {}).items():
        arrays[f"meta/{key}"] = np.asarray(value)
    return write_npz_atomic(path, arrays)


def write_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` to a temporary file beside ``path``, then rename: a crash never leaves a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def restore_latest(directory: str | Path, groups: dict[str, Sequence[tf.Variable]]) -> dict[str, np.ndarray] | None:
    """Restore ``groups`` from the latest ``state_<n>.npz`` in ``directory``; returns the checkpoint (for its
    metadata), or None (with a warning) when there is none."""
    path = latest_checkpoint(directory)
    if path is None:
        log.warning("resume=true but no checkpoint in %s; starting from scratch", directory)
        return None
    state = load_checkpoint(path)
    for group, variables in groups.items():
        restore_group(state, group, variables, path)
    log.info("resuming from %s", path)
    return state


def load_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} could not be read: {e}") from e


def groups_in(ckpt: dict[str, np.ndarray]) -> set[str]:
    return {k.rsplit("/", 1)[0] for k in ckpt if not k.startswith("meta/")}


def restore_group(ckpt: dict[str, np.ndarray], group: str, variables: Sequence[tf.Variable],
                  path: str | Path = "<checkpoint>") -> None:
    """Assign the arrays of ``group`` to ``variables`` in order, checking count and shapes."""
    keys = sorted(k for k in ckpt if k.rsplit("/", 1)[0] == group)
    if not keys:
        raise CheckpointError(f"checkpoint {path} has no '{group}' weights; it has {sorted(groups_in(ckpt))}")
    if len(keys) != len(variables):
        raise CheckpointError(f"checkpoint {path}: '{group}' has {len(keys)} weights but the network has "
                              f"{len(variables)}; does the config (mlp_dims, activation, ...) match the run "
                              f"that wrote it?")
    for key, var in zip(keys, variables):
        if tuple(ckpt[key].shape) != tuple(var.shape):
            raise CheckpointError(f"checkpoint {path}: '{key}' has shape {ckpt[key].shape} but network weight "
                                  f"'{var.path if hasattr(var, 'path') else var.name}' has shape {var.shape}")
        var.assign(ckpt[key])


def meta(ckpt: dict[str, np.ndarray], key: str, default: Any = None) -> Any:
    value = ckpt.get(f"meta/{key}")
    return default if value is None else value.item() if value.ndim == 0 else value


def load_policy_weights(model: Any, path: str | Path) -> None:
    """Load a policy's base network: the "ema" weights of a pre-training checkpoint when present, else
    "model" (as the reference does for diffusion; Gaussian/GMM pre-training is loaded from "model")."""
    ckpt = load_checkpoint(path)
    names = groups_in(ckpt)
    group = "ema" if "ema" in names and getattr(model, "load_ema", True) else "model"
    if group not in names:
        group = "actor_ft" if "actor_ft" in names else group
    restore_group(ckpt, group, model.network.weights, path)


def load_finetune_weights(model: Any, path: str | Path) -> None:
    """Initialise a fine-tuning model: from a pre-training checkpoint, the base network ("ema" or "model")
    is copied into ``actor_ft``; from a fine-tuning checkpoint, "network", "actor_ft" and "critic" are all
    restored."""
    ckpt = load_checkpoint(path)
    names = groups_in(ckpt)
    if "actor_ft" in names:
        restore_group(ckpt, "network", model.network.weights, path)
        restore_group(ckpt, "actor_ft", model.actor_ft.weights, path)
        if "critic" in names:
            restore_group(ckpt, "critic", model.critic.weights, path)
        return
    load_policy_weights(model, path)
    model.sync_actor_ft()


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"state_{step}.npz"


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The ``state_<n>.npz`` with the largest n in ``directory``, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.glob("state_*.npz")
             if (m := re.fullmatch(r"state_(\d+)\.npz", p.name))]
    return max(found)[1] if found else None


def optimizer_variables(optimizer: Any, var_list: Sequence[tf.Variable]) -> list[tf.Variable]:
    """The optimizer's state variables (built for ``var_list`` if needed), in a stable order."""
    if not optimizer.built:
        optimizer.build(var_list)
    return list(optimizer.variables)
