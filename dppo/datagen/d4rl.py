"""The reference's D4RL processing (its ``get_d4rl_dataset.py``), shared by the converters and the SAC data maker.

Flat D4RL-style arrays are cut into trajectories after every terminal or timeout flag; min/max are taken over
the whole data; trajectories whose return is not positive are dropped; states and actions are normalised to
[-1, 1] and written as ``train.npz`` (states, actions, rewards, terminals, traj_lengths) + ``normalization.npz``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dppo.data.normalization import Normalization, minmax
from dppo.data.npz import write_dataset


def split_d4rl(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminals: np.ndarray,
               timeouts: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """Cut flat D4RL-style arrays into raw trajectories after every terminal or timeout flag.

    Rows after the last flag (an unfinished tail) are dropped, as the reference's loop only closes a
    trajectory at a flag.
    """
    n = len(observations)
    for key, arr in (("actions", actions), ("rewards", rewards), ("terminals", terminals)):
        if len(arr) != n:
            raise ValueError(f"'{key}' has {len(arr)} rows but 'observations' has {n}")
    terminals = np.asarray(terminals).astype(bool).reshape(-1)
    ends = terminals.copy()
    if timeouts is not None:
        if len(timeouts) != n:
            raise ValueError(f"'timeouts' has {len(timeouts)} rows but 'observations' has {n}")
        ends |= np.asarray(timeouts).astype(bool).reshape(-1)
    trajs, start = [], 0
    for end in np.flatnonzero(ends):
        sl = slice(start, end + 1)
        trajs.append({"states": np.asarray(observations[sl], np.float32),
                      "actions": np.asarray(actions[sl], np.float32),
                      "rewards": np.asarray(rewards[sl], np.float32).reshape(-1),
                      "terminals": terminals[sl]})
        start = end + 1
    return trajs


def process_d4rl(trajectories: list[dict[str, np.ndarray]], out_dir: str | Path,
                 normalization: Normalization | None = None) -> dict[str, Any]:
    """The reference's ``get_d4rl_dataset`` processing on raw trajectories: whole-data min/max (of all
    ``trajectories`` unless ``normalization`` is given), drop trajectories whose return is not positive,
    normalise, write ``train.npz`` + ``normalization.npz``. Returns statistics of the kept data."""
    if not trajectories:
        raise ValueError("no complete trajectory (no terminal or timeout flag) in the data")
    norm = normalization
    if norm is None:
        states = np.concatenate([t["states"] for t in trajectories])
        actions = np.concatenate([t["actions"] for t in trajectories])
        norm = Normalization(*minmax(states), *minmax(actions))
    kept = [t for t in trajectories if float(np.sum(t["rewards"])) > 0]
    if not kept:
        raise ValueError("every trajectory has a non-positive return; nothing to write")
    path = write_dataset(out_dir, kept, normalization=norm)
    returns = np.array([float(np.sum(t["rewards"])) for t in kept])
    lengths = np.array([len(t["actions"]) for t in kept])
    return {"path": str(path), "n_traj": len(kept), "n_dropped": len(trajectories) - len(kept),
            "n_transitions": int(lengths.sum()), "return_mean": float(returns.mean()),
            "return_std": float(returns.std()), "return_min": float(returns.min()),
            "return_max": float(returns.max()), "length_mean": float(lengths.mean()),
            "size_mb": Path(path).stat().st_size / 2**20}
