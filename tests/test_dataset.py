"""npz dataset: windows, observation-history padding, the tf.data pipeline, and one clear error per bad input."""

import numpy as np
import pytest

from dppo.data.normalization import Normalization, normalize, unnormalize
from dppo.data.npz import DatasetError, write_dataset
from dppo.data.sequence import StitchedSequenceDataset


def write(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture
def hand_made(tmp_path):
    # two trajectories of lengths 4 and 3; state value = global row index, action = 10 * row index
    states = np.arange(7, dtype=np.float32)[:, None].repeat(2, 1)
    actions = 10 * np.arange(7, dtype=np.float32)[:, None]
    return write(tmp_path / "train.npz", states=states, actions=actions, traj_lengths=np.array([4, 3]))


def test_windows_never_cross_episodes_and_history_is_repeat_padded(hand_made):
    ds = StitchedSequenceDataset(hand_made, horizon_steps=2, cond_steps=3)
    np.testing.assert_array_equal(ds.indices, [[0, 0], [1, 1], [2, 2], [4, 0], [5, 1]])
    actions, cond = ds[1]
    np.testing.assert_array_equal(actions[:, 0], [10, 20])
    np.testing.assert_array_equal(cond["state"][:, 0], [0, 0, 1])  # oldest first, clamped to the episode start
    actions, cond = ds[4]
    np.testing.assert_array_equal(actions[:, 0], [50, 60])
    np.testing.assert_array_equal(cond["state"][:, 0], [4, 4, 5])  # second episode starts at row 4


def test_tf_pipeline_yields_every_window_once(hand_made):
    ds = StitchedSequenceDataset(hand_made, horizon_steps=2, cond_steps=1)
    batches = list(ds.as_tf_dataset(batch_size=2, seed=1))
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]  # last partial batch kept
    firsts = sorted(float(a[0, 0]) for b in batches for a in b[0].numpy())
    assert firsts == [0, 10, 20, 40, 50]
    for acts, cond in batches:  # each window's state is the row of its first action
        np.testing.assert_array_equal(cond["state"].numpy()[:, 0, 0] * 10, acts.numpy()[:, 0, 0])


def test_max_n_episodes_takes_the_first_episodes(hand_made):
    ds = StitchedSequenceDataset(hand_made, horizon_steps=1, cond_steps=1, max_n_episodes=1)
    assert len(ds) == 4


@pytest.mark.parametrize("arrays, message", [
    (dict(states=np.zeros((5, 2)), traj_lengths=np.array([5])), "lacks array"),
    (dict(states=np.zeros((5, 2)), actions=np.zeros((4, 1)), traj_lengths=np.array([5])), "'actions' has 4 rows"),
    (dict(states=np.zeros((5, 2)), actions=np.zeros((5, 1)), traj_lengths=np.array([3, 3])), "sums to 6"),
    (dict(states=np.full((5, 2), np.nan), actions=np.zeros((5, 1)), traj_lengths=np.array([5])), "NaN"),
    (dict(states=np.zeros(5), actions=np.zeros((5, 1)), traj_lengths=np.array([5])), "must be 2-D"),
    (dict(states=np.zeros((5, 3)), actions=np.zeros((5, 1)), traj_lengths=np.array([5])), "obs_dim is 2"),
])
def test_bad_data_gives_one_clear_error_naming_the_file(tmp_path, arrays, message):
    path = write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=message) as err:
        StitchedSequenceDataset(path, horizon_steps=1, obs_dim=2)
    assert "bad.npz" in str(err.value)


def test_missing_file_and_short_trajectories(tmp_path, hand_made):
    with pytest.raises(DatasetError, match="does not exist"):
        StitchedSequenceDataset(str(tmp_path / "nope.npz"))
    with pytest.raises(ValueError, match="horizon_steps=9"):
        StitchedSequenceDataset(hand_made, horizon_steps=9)


def test_write_dataset_normalises_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    trajs = [{"states": rng.uniform(2, 5, (6, 3)), "actions": rng.uniform(-4, -1, (6, 2))} for _ in range(3)]
    write_dataset(tmp_path, trajs, include_zero=True)
    norm = Normalization.load(tmp_path / "normalization.npz")
    np.testing.assert_array_equal(norm.obs_min, 0)  # zero-inclusive min/max (reference quirk)
    np.testing.assert_array_equal(norm.action_max, 0)
    ds = np.load(tmp_path / "train.npz")
    assert ds["states"].min() >= -1 and ds["states"].max() <= 1
    raw = np.concatenate([t["states"] for t in trajs])
    np.testing.assert_allclose(norm.unnormalize_obs(ds["states"]), raw, rtol=1e-5, atol=1e-5)
    x = rng.normal(size=(4, 3))
    np.testing.assert_allclose(unnormalize(normalize(x, -2, 3), -2, 3), x, atol=1e-5)
    with pytest.raises(ValueError, match="lacks"):
        np.savez(tmp_path / "n.npz", obs_min=np.zeros(1))
        Normalization.load(tmp_path / "n.npz")
