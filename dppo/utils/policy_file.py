"""The policy file: one ``.npz`` that holds everything needed to rebuild a trained policy for sampling.

Keys (all plain arrays, read with ``allow_pickle=False``):

- ``format``: ``"dppo-policy/1"``; ``kind``: ``"diffusion"``, ``"gaussian"`` or ``"gmm"``
- ``spec``: a JSON string - the policy class, its constructor arguments, the network config (Hydra, resolved),
  ``fine_tuned`` / ``ft_denoising_steps`` for a DPPO policy, ``pixels``, ``clamp_obs``, the run's seed
- ``norm/obs_min``, ``norm/obs_max``, ``norm/action_min``, ``norm/action_max`` when the run was normalised
- ``weights/<group>/<variable path>``: group ``network`` (and ``actor_ft`` for a DPPO policy), keyed by each
  variable's Keras path inside its network.

Keras numbers auto-named layers per process (``linear_5`` in a process that built other layers first), so the
stored path is canonical: the network's own name is dropped and each auto-numbered layer name is renumbered
from 0 among its siblings of the same base name, in weight order. The same architecture gives the same keys in
any process. This module reads and writes the file; ``dppo.policy`` builds the policy from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dppo.utils.checkpoint import CheckpointError, load_checkpoint, write_npz_atomic

FORMAT = "dppo-policy/1"
KINDS = ("diffusion", "gaussian", "gmm")
NORM_KEYS = ("obs_min", "obs_max", "action_min", "action_max")
_NUMBERED = re.compile(r"^(.*?)(?:_\d+)?$")


def canonical_paths(variables: Sequence[tf.Variable]) -> list[str]:
    """Each variable's path inside its network, with auto-numbered layer names renumbered from 0 (see above)."""
    names: dict[tuple[str, ...], str] = {}  # layer path as Keras wrote it -> canonical component
    counts: dict[tuple[tuple[str, ...], str], int] = {}  # (canonical parent, base name) -> layers seen
    out = []
    for var in variables:
        parts = str(var.path).split("/")[1:]  # the network's own (process-numbered) name dropped
        canon: list[str] = []
        for depth in range(len(parts) - 1):
            key = tuple(parts[:depth + 1])
            if key not in names:
                base = _NUMBERED.match(parts[depth]).group(1)
                slot = (tuple(canon), base)
                names[key] = f"{base}_{counts.get(slot, 0)}"
                counts[slot] = counts.get(slot, 0) + 1
            canon.append(names[key])
        out.append("/".join([*canon, parts[-1]]))
    if len(set(out)) != len(out):
        raise ValueError(f"two variables share a canonical path: {sorted(p for p in out if out.count(p) > 1)[:4]}")
    return out


@dataclass
class PolicyFile:
    """The content of a policy file."""

    kind: str
    spec: dict[str, Any]
    normalization: dict[str, np.ndarray] | None = None
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # group -> canonical path -> array
    path: Path | None = None


def write_policy_file(path: str | Path, kind: str, spec: dict[str, Any],
                      groups: dict[str, Sequence[tf.Variable]],
                      normalization: dict[str, np.ndarray] | None = None) -> Path:
    """Write a policy file atomically; ``groups`` maps "network" (and "actor_ft") to the network's weights."""
    if kind not in KINDS:
        raise ValueError(f"policy kind '{kind}' is not one of {KINDS}")
    arrays: dict[str, np.ndarray] = {"format": np.asarray(FORMAT), "kind": np.asarray(kind),
                                     "spec": np.asarray(json.dumps(spec, sort_keys=True))}
    if normalization is not None:
        arrays.update({f"norm/{k}": np.asarray(normalization[k], np.float32) for k in NORM_KEYS})
    for group, variables in groups.items():
        for name, var in zip(canonical_paths(variables), variables):
            arrays[f"weights/{group}/{name}"] = var.numpy()
    return write_npz_atomic(path, arrays)


def is_policy_file(path: str | Path) -> bool:
    """Whether ``path`` is an npz with the policy file's ``format`` key."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return "format" in f.files and str(f["format"]).startswith("dppo-policy/")
    except Exception:
        return False


def read_policy_file(path: str | Path) -> PolicyFile:
    """Read a policy file; any problem raises :class:`CheckpointError` naming it."""
    path = Path(path)
    arrays = load_checkpoint(path)  # the same reader as checkpoints: a missing or corrupt file is named
    if str(arrays.get("format", "")) != FORMAT:
        raise CheckpointError(f"{path} is not a policy file of format {FORMAT} (format: "
                              f"{arrays['format'] if 'format' in arrays else 'none'})")
    kind = str(arrays["kind"])
    if kind not in KINDS:
        raise CheckpointError(f"policy file {path}: unknown kind '{kind}'")
    norm = None
    if any(f"norm/{k}" in arrays for k in NORM_KEYS):
        missing = [k for k in NORM_KEYS if f"norm/{k}" not in arrays]
        if missing:
            raise CheckpointError(f"policy file {path}: normalisation lacks {missing}")
        norm = {k: arrays[f"norm/{k}"] for k in NORM_KEYS}
    weights: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("weights/"):
            group, name = key[len("weights/"):].split("/", 1)
            weights.setdefault(group, {})[name] = value
    return PolicyFile(kind, json.loads(str(arrays["spec"])), norm, weights, path)


def assign_weights(variables: Sequence[tf.Variable], arrays: dict[str, np.ndarray], where: str) -> None:
    """Assign ``arrays`` (canonical path -> array) to ``variables`` by path; every variable must be present with
    its shape and finite values, and no array may be left over. Nothing is assigned unless all fit."""
    names = canonical_paths(variables)
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        raise CheckpointError(f"{where}: the network's weights {missing[:4]} are missing and {extra[:4]} are not "
                              f"the network's; was the file written for another architecture?")
    for name, var in zip(names, variables):
        value = arrays[name]
        if tuple(value.shape) != tuple(var.shape):
            raise CheckpointError(f"{where}: '{name}' has shape {value.shape} but the network's has {var.shape}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CheckpointError(f"{where}: '{name}' contains NaN or inf")
    for name, var in zip(names, variables):
        var.assign(arrays[name].astype(tf.as_dtype(var.dtype).as_numpy_dtype, copy=False))
