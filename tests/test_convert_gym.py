"""D4RL hdf5, Minari and reference-npz converters on small files written here with the same schema."""

import h5py
import numpy as np
import pytest

from dppo.data.normalization import Normalization
from dppo.data.npz import DatasetError, load_npz
from dppo.data.sequence import StitchedSequenceDataset
from dppo.datagen.convert import convert_d4rl_hdf5, convert_minari, convert_reference_npz


def d4rl_arrays(seed=0):
    """Four trajectories: lengths 3 (terminal), 4 (timeout), 2 (terminal, negative return -> dropped),
    3 (timeout), then an unfinished tail of 2 rows (dropped)."""
    rng = np.random.default_rng(seed)
    n = 3 + 4 + 2 + 3 + 2
    obs = rng.normal(size=(n, 5)).astype(np.float32)
    obs[7, 0] = 50.0  # extreme value inside the dropped trajectory: must still set the min/max
    act = rng.uniform(-0.9, 0.9, (n, 2)).astype(np.float32)
    rew = np.ones(n, np.float32)
    rew[7:9] = -1.0
    term = np.zeros(n, bool)
    tout = np.zeros(n, bool)
    term[[2, 8]] = True
    tout[[6, 11]] = True
    return obs, act, rew, term, tout


def test_convert_d4rl_hdf5(tmp_path):
    obs, act, rew, term, tout = d4rl_arrays()
    path = tmp_path / "hopper-medium-v2.hdf5"
    with h5py.File(path, "w") as f:
        for k, v in dict(observations=obs, actions=act, rewards=rew, terminals=term, timeouts=tout,
                         next_observations=obs).items():
            f.create_dataset(k, data=v)
    stats = convert_d4rl_hdf5(path, tmp_path / "out")
    assert stats["n_traj"] == 3 and stats["n_dropped"] == 1 and stats["n_transitions"] == 10
    data = load_npz(tmp_path / "out" / "train.npz", obs_dim=5, action_dim=2)
    np.testing.assert_array_equal(data["traj_lengths"], [3, 4, 3])
    keep = np.r_[0:7, 9:12]
    norm = Normalization.load(tmp_path / "out" / "normalization.npz")
    np.testing.assert_allclose(norm.obs_max[0], 50.0)  # whole-data max, dropped trajectory included
    np.testing.assert_allclose(norm.obs_min, obs.min(0))  # the unfinished tail counts too
    np.testing.assert_allclose(data["states"], 2 * ((obs[keep] - obs.min(0)) / (obs.max(0) - obs.min(0) + 1e-6)
                                                    - 0.5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize_action(data["actions"]), act[keep], atol=1e-5)
    np.testing.assert_array_equal(data["terminals"], term[keep])
    np.testing.assert_array_equal(data["rewards"], rew[keep])
    assert StitchedSequenceDataset(tmp_path / "out" / "train.npz", horizon_steps=2).indices.shape == (7, 2)


def test_convert_d4rl_hdf5_missing_key(tmp_path):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match="actions"):
        convert_d4rl_hdf5(path, tmp_path / "out")


def test_convert_minari(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "mujoco" / "hopper" / "medium-v0"
    (root / "data").mkdir(parents=True)
    lengths, episodes = [4, 6, 3], []
    with h5py.File(root / "data" / "main_data.hdf5", "w") as f:
        for i in (0, 2, 1, 10):  # written out of order; episode_10 sorts after episode_2
            t = lengths[i] if i < 3 else 2
            ep = {"observations": rng.normal(size=(t + 1, 4)), "actions": rng.uniform(-1, 1, (t, 2)),
                  "rewards": np.full(t, -1.0 if i == 10 else 0.5), "terminations": np.eye(t, dtype=bool)[-1],
                  "truncations": np.zeros(t, bool)}
            g = f.create_group(f"episode_{i}")
            for k, v in ep.items():
                g.create_dataset(k, data=v)
            episodes.append((i, ep))
    stats = convert_minari(root, tmp_path / "out")
    episodes = [ep for _, ep in sorted(episodes, key=lambda e: e[0])]
    kept = episodes[:3]  # episode_10 has a negative return
    assert stats["n_traj"] == 3 and stats["n_dropped"] == 1
    data = load_npz(tmp_path / "out" / "train.npz")
    np.testing.assert_array_equal(data["traj_lengths"], lengths)
    norm = Normalization.load(tmp_path / "out" / "normalization.npz")
    all_states = np.concatenate([e["observations"][:-1] for e in episodes])  # final observations not used
    np.testing.assert_allclose(norm.obs_min, all_states.min(0), rtol=1e-6)
    np.testing.assert_allclose(norm.unnormalize_obs(data["states"]),
                               np.concatenate([e["observations"][:-1] for e in kept]), atol=1e-5)
    np.testing.assert_array_equal(data["terminals"], np.concatenate([e["terminations"] for e in kept]))


def test_convert_minari_rejects_wrong_observation_count(tmp_path):
    with h5py.File(tmp_path / "main_data.hdf5", "w") as f:
        g = f.create_group("episode_0")
        for k, v in dict(observations=np.zeros((3, 2)), actions=np.zeros((3, 1)), rewards=np.ones(3),
                         terminations=np.zeros(3, bool)).items():
            g.create_dataset(k, data=v)
    with pytest.raises(DatasetError, match="one more observation"):
        convert_minari(tmp_path, tmp_path / "out")


def test_convert_reference_npz(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    states = np.random.default_rng(2).uniform(-1, 1, (10, 3)).astype(np.float32)
    np.savez(src / "train.npz", states=states, actions=np.zeros((10, 2), np.float32), traj_lengths=np.array([4, 6]))
    with pytest.raises(DatasetError, match="normalization"):
        convert_reference_npz(src / "train.npz", tmp_path / "out")
    Normalization(np.zeros(3), np.ones(3), np.zeros(2), np.ones(2)).save(src / "normalization.npz")
    out = convert_reference_npz(src / "train.npz", tmp_path / "out")
    np.testing.assert_array_equal(load_npz(out)["states"], states)
    assert (tmp_path / "out" / "normalization.npz").is_file()
    Normalization(np.zeros(4), np.ones(4), np.zeros(2), np.ones(2)).save(src / "normalization.npz")
    with pytest.raises(DatasetError, match="dim"):
        convert_reference_npz(src / "train.npz", tmp_path / "out2")
    np.savez(src / "train.npz", states=3 * states, actions=np.zeros((10, 2), np.float32),
             traj_lengths=np.array([4, 6]))
    Normalization(np.zeros(3), np.ones(3), np.zeros(2), np.ones(2)).save(src / "normalization.npz")
    with pytest.raises(DatasetError, match="not normalised"):
        convert_reference_npz(src / "train.npz", tmp_path / "out3")


def test_from_shipped_copies_the_data_set(tmp_path, monkeypatch):
    from dppo.datagen import locomotion

    assert (locomotion.SHIPPED_DIR / "hopper-medium-v2" / "train.npz").is_file()  # the repository's data_shipped/
    shipped = tmp_path / "shipped"
    (shipped / "hopper-medium-v2").mkdir(parents=True)
    for name in ("train.npz", "normalization.npz", "README.md"):
        (shipped / "hopper-medium-v2" / name).write_bytes(name.encode())
    monkeypatch.setattr(locomotion, "SHIPPED_DIR", shipped)
    locomotion.cli(["--task", "hopper", "--from-shipped", "--out", str(tmp_path / "data" / "gym")])
    assert (tmp_path / "data" / "gym" / "hopper-medium-v2" / "train.npz").read_bytes() == b"train.npz"
    with pytest.raises(SystemExit, match="walker2d"):
        locomotion.cli(["--task", "walker2d", "--from-shipped", "--out", str(tmp_path / "out")])
