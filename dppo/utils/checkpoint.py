"""Checkpoints as single ``.npz`` files, written atomically (temp file, fsync, rename, fsync of the folder).

A checkpoint maps group names ("model", "ema", "actor_ft", "critic", "optimizer/actor", ...) to the ordered
weight lists of the corresponding Keras layers / optimizers, plus scalar metadata under "meta/" (including what
the run was written for: dims, denoising steps, n_envs, see ``dppo.utils.validate.run_record``). Loading
checks counts, shapes, dtypes and finiteness and names the file and the weight on a mismatch: whatever is wrong
with a file, reading it raises :class:`CheckpointError`.
"""

from __future__ import annotations

import errno
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

TMP_SUFFIX = ".tmp.npz"  # temporary files of atomic writes; a killed write leaves one behind


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the network it is loaded into."""


class CheckpointState(dict):
    """The arrays of one checkpoint file (name -> array), remembering the file they came from."""

    def __init__(self, arrays: dict[str, np.ndarray], path: str | Path):
        super().__init__(arrays)
        self.path = Path(path)


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
    """``np.savez`` to a temporary file beside ``path``, fsync, then rename: a crash (or a full disk) never
    leaves a partial file under ``path``, and the previous file stays intact until the new one is complete.
    An ``OSError`` names ``path``."""
    from dppo.utils.faults import fault_point

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=TMP_SUFFIX)
        os.close(fd)
        np.savez(tmp, **arrays)
        fsync_file(tmp)
        fault_point(f"write:{path.name}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        raise_with_path(e, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def raise_with_path(e: OSError, path: str | Path) -> None:
    """Re-raise an ``OSError`` from writing ``path`` with a message that names it (and says why, for the
    usual causes: a full disk, a read-only file system, missing permission)."""
    hint = {errno.ENOSPC: " (the disk is full)", errno.EDQUOT: " (disk quota exceeded)",
            errno.EROFS: " (read-only file system)", errno.EACCES: " (permission denied)"}.get(e.errno, "")
    raise type(e)(e.errno, f"could not write {path}: {e.strerror or e}{hint}; the previous file, if any, is "
                           f"unchanged") from e


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed atomic writes left in ``directory`` (``*.tmp.npz`` of checkpoints
    and replay buffers, ``*.tmp`` of text files); returns them."""
    directory = Path(directory)
    stale = sorted({*directory.glob(f"*{TMP_SUFFIX}"), *directory.glob("*.tmp")}) if directory.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) of interrupted writes in %s", len(stale), directory)
    return stale


def latest_state(directory: str | Path) -> CheckpointState | None:
    """The latest ``state_<n>.npz`` in ``directory``, read (not restored), or None when there is none."""
    path = latest_checkpoint(directory)
    return None if path is None else load_checkpoint(path)


def restore_groups(state: CheckpointState, groups: dict[str, Sequence[tf.Variable]]) -> None:
    """Restore every group of variables from ``state`` (see :func:`restore_group`)."""
    for group, variables in groups.items():
        restore_group(state, group, variables, state.path)
    log.info("resuming from %s", state.path)


def restore_latest(directory: str | Path, groups: dict[str, Sequence[tf.Variable]]) -> CheckpointState | None:
    """Restore ``groups`` from the latest ``state_<n>.npz`` in ``directory``; returns the checkpoint (for its
    metadata), or None (with a warning) when there is none."""
    state = latest_state(directory)
    if state is None:
        log.warning("resume=true but no checkpoint in %s; starting from scratch", directory)
        return None
    restore_groups(state, groups)
    return state


def load_checkpoint(path: str | Path) -> CheckpointState:
    """Read every array of ``path``; any problem with the file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            return CheckpointState({k: f[k] for k in f.files}, path)
    except Exception as e:  # truncated or corrupt zip, pickled object arrays, not an npz at all, ...
        raise CheckpointError(f"checkpoint {path} could not be read ({type(e).__name__}: {e}); if a run was killed "
                              f"while writing it, resume from an earlier state_<n>.npz") from e


def groups_in(ckpt: dict[str, np.ndarray]) -> set[str]:
    return {k.rsplit("/", 1)[0] for k in ckpt if not k.startswith("meta/")}


def restore_group(ckpt: dict[str, np.ndarray], group: str, variables: Sequence[tf.Variable],
                  path: str | Path | None = None) -> None:
    """Assign the arrays of ``group`` to ``variables`` in order, checking count, shapes, dtypes and that the
    values are finite; nothing is assigned unless every array fits."""
    path = path if path is not None else getattr(ckpt, "path", "<checkpoint>")
    keys = sorted(k for k in ckpt if k.rsplit("/", 1)[0] == group)
    if not keys:
        raise CheckpointError(f"checkpoint {path} has no '{group}' weights; it has {sorted(groups_in(ckpt))}")
    if len(keys) != len(variables):
        raise CheckpointError(f"checkpoint {path}: '{group}' has {len(keys)} weights but the network has "
                              f"{len(variables)}; does the config (mlp_dims, activation, ...) match the run "
                              f"that wrote it?")
    values = []
    for key, var in zip(keys, variables):
        value = ckpt[key]
        name = var.path if hasattr(var, "path") else var.name
        if tuple(value.shape) != tuple(var.shape):
            raise CheckpointError(f"checkpoint {path}: '{key}' has shape {value.shape} but network weight "
                                  f"'{name}' has shape {var.shape}")
        want = np.dtype(tf.as_dtype(var.dtype).as_numpy_dtype)
        if value.dtype.kind != want.kind and not (value.dtype.kind in "iu" and want.kind in "iu"):
            raise CheckpointError(f"checkpoint {path}: '{key}' has dtype {value.dtype} but network weight '{name}' "
                                  f"is {want}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointError(f"checkpoint {path}: '{key}' (weight '{name}') contains NaN or inf; the run that "
                                  f"wrote it had diverged - use an earlier checkpoint")
        values.append(value.astype(want, copy=False))
    for var, value in zip(variables, values):
        var.assign(value)


_REQUIRED = object()


def meta(ckpt: dict[str, np.ndarray], key: str, default: Any = None, kind: type | None = None,
         shape: tuple[int, ...] | None = None) -> Any:
    """The metadata ``meta/<key>``: a Python scalar for 0-d arrays, else the array; ``default`` when absent.

    With ``kind`` (int, float, str or np.ndarray) the value must be present (unless a default is given) and
    convertible - a finite number, or for np.ndarray a finite numeric array (of ``shape`` when given) -
    otherwise :class:`CheckpointError`.
    """
    value = ckpt.get(f"meta/{key}")
    if kind is None:
        return default if value is None else value.item() if value.ndim == 0 else value
    path = getattr(ckpt, "path", "<checkpoint>")
    if value is None:
        if default is not None:
            return default
        raise CheckpointError(f"checkpoint {path} lacks 'meta/{key}'; it was not written by this runner (or by an "
                              f"older version)")
    try:
        if kind is np.ndarray:
            if value.dtype.kind not in "iuf" or (shape is not None and tuple(value.shape) != tuple(shape)):
                raise ValueError(f"expected a numeric array of shape {shape}, got {value.dtype} {value.shape}")
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise ValueError("it contains NaN or inf")
            return value
        if value.ndim != 0:
            raise ValueError(f"expected a scalar, got shape {value.shape}")
        item = value.item()
        if kind in (int, float):
            if isinstance(item, (str, bytes)) or not np.isfinite(float(item)):
                raise ValueError(f"expected a finite number, got {item!r}")
            if kind is int and float(item) != int(item):
                raise ValueError(f"expected an integer, got {item!r}")
        elif kind is str and not isinstance(item, str):
            raise ValueError(f"expected a string, got {item!r}")
        return kind(item)
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"checkpoint {path}: 'meta/{key}' is unusable: {e}") from e


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
