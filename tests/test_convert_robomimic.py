"""robomimic hdf5 -> npz converter on small files written here with robomimic's schema."""

import json

import h5py
import numpy as np
import pytest

from dppo.data.normalization import Normalization
from dppo.data.npz import load_npz
from dppo.datagen.convert import convert_robomimic_hdf5

LENGTHS = {"demo_0": 5, "demo_1": 3, "demo_2": 4, "demo_10": 6}  # demo_10 must come last, not third


def _demo_obs(rng, t, two_arms=False, image=False):
    obs = {}
    for r in range(2 if two_arms else 1):
        obs[f"robot{r}_eef_pos"] = rng.uniform([-0.2, -0.2, 0.8], [0.2, 0.2, 1.2], size=(t, 3))  # z > 0: min is 0
        obs[f"robot{r}_eef_quat"] = rng.normal(size=(t, 4))
        obs[f"robot{r}_gripper_qpos"] = rng.uniform(0.01, 0.04, size=(t, 2))
        obs[f"robot{r}_joint_pos"] = rng.normal(size=(t, 7))  # not a low-dim key: must be ignored
    obs["object"] = rng.normal(size=(t, 41 if two_arms else 10))
    if image:
        obs["agentview_image"] = rng.integers(0, 256, size=(t, 8, 8, 3), dtype=np.uint8)
        obs["robot0_eye_in_hand_image"] = rng.integers(0, 256, size=(t, 8, 8, 3), dtype=np.uint8)
    return obs


def write_robomimic(path, env_name="Lift", two_arms=False, image=False, seed=0):
    rng = np.random.default_rng(seed)
    raw = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": env_name, "type": 1, "env_kwargs": {}})
        for name, t in LENGTHS.items():
            g = data.create_group(name)
            obs = _demo_obs(rng, t, two_arms, image)
            for k, v in obs.items():
                g.create_dataset(f"obs/{k}", data=v)
                g.create_dataset(f"next_obs/{k}", data=v)
            actions = rng.uniform(-1, 1, size=(t, 14 if two_arms else 7))
            g.create_dataset("actions", data=actions)
            g.create_dataset("rewards", data=np.r_[np.zeros(t - 1), 1.0])
            g.create_dataset("dones", data=np.r_[np.zeros(t - 1), 1.0])
            g.attrs["num_samples"] = t
            raw[name] = (obs, actions)
    return raw


def test_lowdim_order_values_and_normalisation(tmp_path):
    raw = write_robomimic(tmp_path / "low_dim.hdf5")
    stats = convert_robomimic_hdf5(tmp_path / "low_dim.hdf5", tmp_path / "out")
    assert stats["task"] == "lift" and stats["obs_dim"] == 19 and stats["n_traj"] == 4
    data = load_npz(tmp_path / "out" / "train.npz", obs_dim=19, action_dim=7)
    order = ["demo_0", "demo_1", "demo_2", "demo_10"]
    np.testing.assert_array_equal(data["traj_lengths"], [LENGTHS[n] for n in order])
    keys = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object"]
    want_s = np.concatenate([np.concatenate([raw[n][0][k] for k in keys], axis=1) for n in order])
    want_a = np.concatenate([raw[n][1] for n in order])
    norm = Normalization.load(tmp_path / "out" / "normalization.npz")
    np.testing.assert_allclose(norm.unnormalize_obs(data["states"]), want_s, atol=1e-5)
    np.testing.assert_allclose(norm.unnormalize_action(data["actions"]), want_a, atol=1e-5)
    # reference quirk: running min/max start at 0 -> eef z (all > 0) gets min 0, gripper qpos too
    assert norm.obs_min[2] == 0.0 and norm.obs_min[7] == 0.0 and norm.obs_max[2] == pytest.approx(want_s[:, 2].max())
    assert data["rewards"].sum() == 4 and not data["terminals"].any()


def test_max_episodes_and_two_arms(tmp_path):
    write_robomimic(tmp_path / "t.hdf5", env_name="TwoArmTransport", two_arms=True)
    stats = convert_robomimic_hdf5(tmp_path / "t.hdf5", tmp_path / "out", max_episodes=2)
    assert stats["task"] == "transport" and stats["obs_dim"] == 59 and stats["action_dim"] == 14
    assert stats["keys"][3:6] == ["robot1_eef_pos", "robot1_eef_quat", "robot1_gripper_qpos"]
    data = load_npz(tmp_path / "out" / "train.npz", obs_dim=59, action_dim=14)
    np.testing.assert_array_equal(data["traj_lengths"], [5, 3])


def test_cameras_give_images_and_proprio_state(tmp_path):
    raw = write_robomimic(tmp_path / "image.hdf5", env_name="PickPlaceCan", image=True)
    stats = convert_robomimic_hdf5(tmp_path / "image.hdf5", tmp_path / "out",
                                   cameras=["agentview", "robot0_eye_in_hand"])
    assert stats["obs_dim"] == 9 and stats["cameras"] == ["agentview", "robot0_eye_in_hand"]
    data = load_npz(tmp_path / "out" / "train.npz", obs_dim=9, action_dim=7, use_img=True)
    assert data["images"].shape == (18, 6, 8, 8) and data["images"].dtype == np.uint8
    first = raw["demo_0"][0]
    np.testing.assert_array_equal(data["images"][0, :3], first["agentview_image"][0].transpose(2, 0, 1))
    np.testing.assert_array_equal(data["images"][0, 3:], first["robot0_eye_in_hand_image"][0].transpose(2, 0, 1))


def test_errors_name_the_problem(tmp_path):
    write_robomimic(tmp_path / "x.hdf5")
    with pytest.raises(ValueError, match="lacks .*frontview_image"):
        convert_robomimic_hdf5(tmp_path / "x.hdf5", tmp_path / "o", cameras=["frontview"])
    with pytest.raises(ValueError, match="obs_dim is 23"):
        convert_robomimic_hdf5(tmp_path / "x.hdf5", tmp_path / "o", task="can")
    with h5py.File(tmp_path / "bad.hdf5", "w") as f:
        f.create_group("observations")
    with pytest.raises(ValueError, match="no 'data' group"):
        convert_robomimic_hdf5(tmp_path / "bad.hdf5", tmp_path / "o")
    with pytest.raises(FileNotFoundError):
        convert_robomimic_hdf5(tmp_path / "missing.hdf5", tmp_path / "o")
