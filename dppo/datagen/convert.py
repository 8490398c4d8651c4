"""Converters from public dataset formats to the npz format of :mod:`dppo.data.npz`: robomimic hdf5, D4RL hdf5,
Minari, and data already in the reference's npz format.

    python -m dppo.datagen.convert robomimic FILE.hdf5 OUT_DIR [--task T] [--cameras C ...] [--max-episodes N]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np

from dppo.data.normalization import Normalization, minmax
from dppo.data.npz import DatasetError, load_npz, write_dataset
from dppo.datagen.d4rl import process_d4rl, split_d4rl

# robomimic low-dim keys (reference's process_robomimic_dataset.py order); "object" is robosuite's object-state
_ROBOMIMIC_PROPRIO = ("eef_pos", "eef_quat", "gripper_qpos")
_ROBOMIMIC_ENV_TASK = {"lift": "lift", "pickplacecan": "can", "nutassemblysquare": "square",
                       "twoarmtransport": "transport", "can": "can", "square": "square", "transport": "transport"}


def _demo_index(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else -1


def _robomimic_task(f, task: str | None) -> str | None:
    if task:
        return _ROBOMIMIC_ENV_TASK.get(task.lower().replace("_", "").split("-")[0], task.lower())
    env_args = f["data"].attrs.get("env_args")
    if env_args is None:
        return None
    if isinstance(env_args, bytes):
        env_args = env_args.decode()
    name = str(json.loads(env_args).get("env_name", "")).lower()
    return _ROBOMIMIC_ENV_TASK.get(name)


def convert_robomimic_hdf5(hdf5_path: str | Path, out_dir: str | Path, task: str | None = None,
                           cameras: list[str] | None = None, max_episodes: int | None = None) -> dict:
    """Convert a robomimic hdf5 (``data/demo_i/{obs/<key>, actions, rewards}``) into train.npz +
    normalization.npz, as the reference's ``process_robomimic_dataset.py`` does.

    Demos are taken in index order (demo_2 before demo_10), optionally only the first ``max_episodes``. The state
    is the concatenation of robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos (+ robot1_* for two-arm tasks,
    detected from the obs keys) and ``object``; with ``cameras`` the state is the proprio part only and
    ``<cam>_image`` (T, H, W, 3) uint8 arrays become ``images`` (T, 3 * n_cams, H, W). Min/max start at 0 (the
    reference's quirk, ``include_zero=True``); terminals are all False as in the reference. ``task`` (lift, can,
    square, transport or a robosuite env name) is only used for a dimension check and the report; it is read
    from the file's ``env_args`` when not given.
    """
    import h5py

    hdf5_path = Path(hdf5_path)
    if not hdf5_path.is_file():
        raise FileNotFoundError(f"robomimic hdf5 {hdf5_path} does not exist")
    with h5py.File(hdf5_path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{hdf5_path}: not a robomimic dataset (no 'data' group); keys {list(f.keys())}")
        names = sorted((k for k in f["data"].keys() if k.startswith("demo")), key=_demo_index)
        if not names:
            raise ValueError(f"{hdf5_path}: 'data' has no demo_* groups")
        if max_episodes is not None:
            names = names[:max_episodes]
        task = _robomimic_task(f, task)
        obs_keys0 = set(f["data"][names[0]]["obs"].keys())
        n_robots = 2 if "robot1_eef_pos" in obs_keys0 else 1
        keys = [f"robot{i}_{k}" for i in range(n_robots) for k in _ROBOMIMIC_PROPRIO]
        if not cameras:
            keys.append("object")
        trajs = []
        for name in names:
            demo = f["data"][name]
            obs = demo["obs"]
            wanted = keys + [f"{c}_image" for c in cameras or []]
            missing = [k for k in wanted if k not in obs]
            if missing:
                raise ValueError(f"{hdf5_path}: data/{name}/obs lacks {missing}; it has {sorted(obs.keys())}")
            states = np.concatenate([np.asarray(obs[k], dtype=np.float64).reshape(len(obs[k]), -1) for k in keys],
                                    axis=1)
            actions = np.asarray(demo["actions"], dtype=np.float64)
            if len(actions) != len(states):
                raise ValueError(f"{hdf5_path}: data/{name} has {len(actions)} actions but {len(states)} observations")
            traj = {"states": states.astype(np.float32), "actions": actions.astype(np.float32),
                    "rewards": (np.asarray(demo["rewards"], dtype=np.float32) if "rewards" in demo
                                else np.zeros(len(actions), np.float32)),
                    "terminals": np.zeros(len(actions), dtype=bool)}
            if cameras:
                ims = [np.asarray(obs[f"{c}_image"], dtype=np.uint8).transpose(0, 3, 1, 2) for c in cameras]
                traj["images"] = np.concatenate(ims, axis=1)
            trajs.append(traj)
    expected = {"lift": 19, "can": 23, "square": 23, "transport": 59}
    dim = trajs[0]["states"].shape[1]
    if not cameras and task in expected and dim != expected[task]:
        raise ValueError(f"{hdf5_path}: {task} states have {dim} dims, the reference's obs_dim is {expected[task]}")
    path = write_dataset(out_dir, trajs, include_zero=True)
    lengths = np.array([len(t["actions"]) for t in trajs])
    return {"path": str(path), "task": task, "n_traj": len(trajs), "n_transitions": int(lengths.sum()),
            "len_min": int(lengths.min()), "len_max": int(lengths.max()), "obs_dim": dim,
            "action_dim": int(trajs[0]["actions"].shape[1]), "keys": keys,
            "cameras": list(cameras or [])}


def robomimic_cli(argv: list[str] | None = None) -> dict:
    """``python -m dppo.datagen.convert robomimic FILE.hdf5 OUT_DIR [--task T] [--cameras C ...] [--max-episodes N]``"""
    p = argparse.ArgumentParser(prog="python -m dppo.datagen.convert robomimic",
                                description="Convert a robomimic hdf5 dataset to train.npz + normalization.npz")
    p.add_argument("hdf5")
    p.add_argument("out")
    p.add_argument("--task", default=None)
    p.add_argument("--cameras", nargs="*", default=None)
    p.add_argument("--max-episodes", type=int, default=None)
    a = p.parse_args(argv)
    stats = convert_robomimic_hdf5(a.hdf5, a.out, task=a.task, cameras=a.cameras, max_episodes=a.max_episodes)
    print(f"{stats['n_traj']} trajectories, {stats['n_transitions']} transitions (lengths {stats['len_min']}-"
          f"{stats['len_max']}), obs dim {stats['obs_dim']}, action dim {stats['action_dim']} -> {stats['path']}")
    return stats


# --- D4RL / Minari / reference npz -----------------------------------------------------------------------
# Gym locomotion data from elsewhere, processed exactly as the reference's get_d4rl_dataset.py
# (dppo.datagen.d4rl): split at terminals/timeouts, whole-data min/max, drop trajectories with non-positive
# return, normalise to [-1, 1]; writes train.npz (states, actions, rewards, terminals, traj_lengths) +
# normalization.npz.
D4RL_KEYS = ("observations", "actions", "rewards", "terminals")


def convert_d4rl_hdf5(path: str | Path, out_dir: str | Path) -> dict:
    """A D4RL hdf5 file (flat ``observations``, ``actions``, ``rewards``, ``terminals`` and optional
    ``timeouts``) -> ``out_dir/{train.npz, normalization.npz}``; returns statistics of the kept data."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"D4RL file {path} does not exist")
    with h5py.File(path, "r") as f:
        missing = [k for k in D4RL_KEYS if k not in f]
        if missing:
            raise DatasetError(f"D4RL file {path} lacks {missing}; it has {sorted(f.keys())}")
        arrays = {k: f[k][()] for k in D4RL_KEYS}
        arrays["timeouts"] = f["timeouts"][()] if "timeouts" in f else None
    # min/max over every row, as the reference (an unfinished tail and dropped trajectories included)
    norm = Normalization(*minmax(arrays["observations"]), *minmax(arrays["actions"]))
    try:
        return process_d4rl(split_d4rl(**arrays), out_dir, norm)
    except ValueError as e:
        raise DatasetError(f"D4RL file {path}: {e}") from e


def _minari_file(dataset_dir: Path) -> Path:
    for candidate in (dataset_dir, dataset_dir / "data" / "main_data.hdf5", dataset_dir / "main_data.hdf5"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"no Minari main_data.hdf5 in {dataset_dir} (looked in {dataset_dir}/data/ and {dataset_dir}/)")


def convert_minari(dataset_dir: str | Path, out_dir: str | Path) -> dict:
    """A Minari dataset (``<dir>/data/main_data.hdf5`` with groups ``episode_<i>`` holding ``observations``
    (T+1 rows: the final observation is dropped), ``actions``, ``rewards``, ``terminations``,
    ``truncations``) -> ``out_dir/{train.npz, normalization.npz}``; returns statistics of the kept data."""
    import h5py

    path = _minari_file(Path(dataset_dir))
    trajs = []
    with h5py.File(path, "r") as f:
        names = sorted((k for k in f.keys() if k.startswith("episode_")), key=lambda k: int(k.split("_")[1]))
        if not names:
            raise DatasetError(f"Minari file {path} has no episode_<i> groups; it has {sorted(f.keys())}")
        for name in names:
            ep = f[name]
            missing = [k for k in ("observations", "actions", "rewards", "terminations") if k not in ep]
            if missing:
                raise DatasetError(f"Minari file {path}: {name} lacks {missing}")
            if not isinstance(ep["observations"], h5py.Dataset):
                raise DatasetError(f"Minari file {path}: {name}/observations is a group (dict observation "
                                   f"space); only flat Box observations are supported")
            obs, actions = ep["observations"][()], ep["actions"][()]
            if len(obs) != len(actions) + 1:
                raise DatasetError(f"Minari file {path}: {name} has {len(obs)} observations for {len(actions)} "
                                   f"actions; expected one more observation than actions")
            trajs.append({"states": obs[:-1].astype(np.float32), "actions": actions.astype(np.float32),
                          "rewards": ep["rewards"][()].astype(np.float32).reshape(-1),
                          "terminals": ep["terminations"][()].astype(bool).reshape(-1)})
    try:
        return process_d4rl(trajs, out_dir)
    except ValueError as e:
        raise DatasetError(f"Minari file {path}: {e}") from e


def convert_reference_npz(path: str | Path, out_dir: str | Path,
                          normalization_path: str | Path | None = None) -> Path:
    """A data set already in the reference's format (e.g. its released ``train.npz``): validate it and its
    ``normalization.npz`` (beside it unless given; it cannot be recomputed from normalised data), then copy
    both into ``out_dir``. Returns the copied ``train.npz``."""
    path = Path(path)
    data = load_npz(path)
    norm_path = Path(normalization_path) if normalization_path else path.parent / "normalization.npz"
    if not norm_path.is_file():
        raise DatasetError(f"{path} needs its normalization file, not found at {norm_path}: the min/max used to "
                           f"normalise the data cannot be recovered from the data itself (pass normalization_path)")
    try:
        norm = Normalization.load(norm_path)
    except ValueError as e:
        raise DatasetError(str(e)) from e
    for key, arr, lo in (("states", data["states"], norm.obs_min), ("actions", data["actions"], norm.action_min)):
        if arr.shape[1] != lo.shape[-1]:
            raise DatasetError(f"{path}: '{key}' have dim {arr.shape[1]} but {norm_path} has {lo.shape[-1]}")
        if np.abs(arr).max() > 1.0 + 1e-3:
            raise DatasetError(f"{path}: '{key}' are not normalised to [-1, 1] (max |x| = {np.abs(arr).max():.3g})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if path.resolve() != (out / "train.npz").resolve():
        shutil.copy2(path, out / "train.npz")
    if norm_path.resolve() != (out / "normalization.npz").resolve():
        shutil.copy2(norm_path, out / "normalization.npz")
    return out / "train.npz"


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "robomimic":
        robomimic_cli(sys.argv[2:])
    else:
        print("usage: python -m dppo.datagen.convert robomimic FILE.hdf5 OUT_DIR [--task T] [--cameras C ...]")
