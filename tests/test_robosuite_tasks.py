"""Robomimic-style robosuite tasks: observation layout, reward/success, seeding, images, scripted demos."""


import numpy as np
import pytest

robosuite = pytest.importorskip("robosuite", reason="robosuite (extra 'robomimic') is not installed")

from dppo.data.normalization import Normalization  # noqa: E402
from dppo.data.npz import load_npz, write_dataset  # noqa: E402
from dppo.datagen.robosuite import collect, down, gripper_yaw, rotvec, run_episode  # noqa: E402
from dppo.envs.robosuite_tasks import (  # noqa: E402
    LOW_DIM_KEYS,
    OBS_DIMS,
    make_robosuite_env,
    resolve_task,
)
from dppo.envs.video import VideoRecorder  # noqa: E402


@pytest.fixture(scope="module")
def lift():
    env = make_robosuite_env("lift", seed=0)
    yield env
    env.close()


def _check_slices(obs, raw, n_robots):
    i = 0
    for r in range(n_robots):
        for key, n in (("eef_pos", 3), ("eef_quat", 4), ("gripper_qpos", 2)):
            np.testing.assert_allclose(obs[i:i + n], raw[f"robot{r}_{key}"], rtol=1e-6, atol=1e-6)
            i += n
    np.testing.assert_allclose(obs[i:], np.asarray(raw["object-state"], dtype=np.float64), rtol=1e-6, atol=1e-6)


def test_lift_obs_layout_and_spaces(lift):
    obs, info = lift.reset(seed=0)
    assert obs.shape == (19,) and obs.dtype == np.float32
    assert lift.observation_space.shape == (19,) and lift.action_space.shape == (7,)
    assert info == {"success": False}
    _check_slices(obs, lift.raw_obs, 1)
    # object-state of Lift = cube_pos, cube_quat, gripper_to_cube_pos
    np.testing.assert_allclose(obs[9:12], lift.raw_obs["cube_pos"], atol=1e-6)


@pytest.mark.parametrize("task", ["can", "square", "transport"])
def test_obs_dims_and_order(task):
    env = make_robosuite_env(task, seed=0)
    try:
        obs, _ = env.reset(seed=1)
        assert obs.shape == (OBS_DIMS[task],)
        n_robots = 2 if task == "transport" else 1
        assert env.action_space.shape == (7 * n_robots,)
        _check_slices(obs, env.raw_obs, n_robots)
        assert LOW_DIM_KEYS[task][-1] == "object" and len(LOW_DIM_KEYS[task]) == 3 * n_robots + 1
    finally:
        env.close()


def test_step_contract_and_sparse_reward(lift):
    lift.reset(seed=0)
    obs, r, terminated, truncated, info = lift.step(np.zeros(7))
    assert (r, terminated, truncated, info["success"]) == (0.0, False, False, False)
    # put the cube 10 cm above the table: success state, reward 1 per step, still no termination
    sim = lift.suite_env.sim
    adr = sim.model.get_joint_qpos_addr("cube_joint0")[0]
    sim.data.qpos[adr + 2] = 0.8 + 0.1
    sim.data.qvel[:] = 0.0
    sim.forward()
    obs, r, terminated, truncated, info = lift.step(np.zeros(7))
    assert info["success"] is True and r == 1.0 and not terminated and not truncated
    with pytest.raises(ValueError, match="7"):
        lift.step(np.zeros(14))


def test_reset_seed_is_deterministic(lift):
    a, _ = lift.reset(seed=3)
    b, _ = lift.reset(seed=3)
    c, _ = lift.reset(seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[9:12], c[9:12])  # the cube moved


def test_resolve_task_names():
    assert resolve_task("can") == ("can", False)
    assert resolve_task("PickPlaceCan") == ("can", False)
    assert resolve_task("square-img") == ("square", True)
    assert resolve_task("TwoArmTransport") == ("transport", False)
    assert resolve_task({"env_name": "Lift", "env_kwargs": {"use_camera_obs": True}}) == ("lift", True)
    with pytest.raises(ValueError, match="unknown robomimic task"):
        resolve_task("stack")


def test_rotation_helpers():
    R = down(0.3)
    assert abs(gripper_yaw(R) - 0.3) < 1e-9
    np.testing.assert_allclose(rotvec(down(0.5) @ down(0.2).T), [0, 0, 0.3], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(rotvec(down(0.0) @ down(np.pi).T)), np.pi, atol=1e-6)


def test_lift_demonstrator_and_normalisation_round_trip(lift, tmp_path):
    trajs = []
    for k in range(2):
        traj, ok = run_episode(lift, "lift", seed=100 + k, rng=np.random.default_rng([7, k]))
        assert ok, f"scripted Lift episode {k} failed"
        assert traj["rewards"][-1] == 1.0 and not traj["terminals"].any()
        assert np.abs(traj["actions"]).max() <= 1.0
        trajs.append(traj)
    write_dataset(tmp_path, trajs, include_zero=True)
    data = load_npz(tmp_path / "train.npz", obs_dim=19, action_dim=7)
    norm = Normalization.load(tmp_path / "normalization.npz")
    np.testing.assert_array_equal(data["traj_lengths"], [len(t["actions"]) for t in trajs])
    raw_states = np.concatenate([t["states"] for t in trajs])
    raw_actions = np.concatenate([t["actions"] for t in trajs])
    np.testing.assert_allclose(norm.unnormalize_obs(data["states"]), raw_states, atol=1e-5)
    np.testing.assert_allclose(norm.unnormalize_action(data["actions"]), raw_actions, atol=1e-5)
    assert (norm.obs_min <= 0).all() and (norm.obs_max >= 0).all()  # robomimic quirk: min/max include 0
    assert data["states"].min() >= -1 - 1e-5 and data["states"].max() <= 1 + 1e-5


def test_collect_writes_dataset(tmp_path):
    stats = collect("lift", n=1, seed=3, out=tmp_path, verbose=False)
    assert stats["successes"] == 1 and stats["attempts"] >= 1 and stats["n_traj"] == 1
    data = load_npz(tmp_path / "train.npz", obs_dim=19, action_dim=7)
    assert int(data["traj_lengths"].sum()) == stats["n_transitions"]
    assert (tmp_path / "normalization.npz").is_file()


def _can_render():
    """Offscreen OpenGL works (checked in a child process: a GL context next to TensorFlow segfaults)."""
    import subprocess
    import sys
    code = ("import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco><worldbody/></mujoco>'); "
            "mujoco.Renderer(m, 8, 8).close()")
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.skipif(not _can_render(), reason="needs offscreen OpenGL (MUJOCO_GL=egl or osmesa)")
def test_video_of_an_episode_is_rendered_outside_this_tensorflow_process(tmp_path):
    import cv2
    import tensorflow as tf  # noqa: F401  (the situation of every runner: TF loaded, then a video)
    env = make_robosuite_env("lift", seed=0, render_size=64)
    try:
        env.reset(seed=0, options={"video_path": str(tmp_path / "ep.mp4")})
        for _ in range(3):
            env.step(np.zeros(7))
        env.reset(seed=1)  # a reset ends the recording
    finally:
        env.close()
    videos = list(tmp_path.glob("ep.*"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0
    if videos[0].suffix == ".mp4":
        cap, frames = cv2.VideoCapture(str(videos[0])), []
        while (ok_frame := cap.read())[0]:
            frames.append(ok_frame[1])
        assert len(frames) == 4 and frames[0].shape == (64, 64, 3) and frames[0].std() > 5


@pytest.mark.skipif(not _can_render(), reason="needs offscreen OpenGL (MUJOCO_GL=egl or osmesa)")
def test_image_obs_upright_and_video(tmp_path):
    import tensorflow as tf  # noqa: F401  (camera observations next to TensorFlow, as in pixel training)
    env = make_robosuite_env("lift", use_image=True, cameras=["agentview"], image_size=32, seed=0)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["state"].shape == (9,) and obs["rgb"].shape == (3, 32, 32) and obs["rgb"].dtype == np.float32
        assert 0 <= obs["rgb"].min() and obs["rgb"].max() <= 255 and obs["rgb"].max() > 1
        np.testing.assert_allclose(obs["state"], env.low_dim_state()[:9])
        # upright: the red cube is where robosuite's camera model projects its centre (row 0 = top)
        from robosuite.utils import camera_utils
        se = env.suite_env
        world_to_pixel = camera_utils.get_camera_transform_matrix(se.sim, "agentview", 32, 32)
        r, c = camera_utils.project_points_from_world_to_camera(
            se.sim.data.body_xpos[se.cube_body_id][None], world_to_pixel, 32, 32)[0]
        red, green = obs["rgb"][0, r, c], obs["rgb"][1, r, c]
        assert red > green + 50, (r, c, obs["rgb"][:, r, c])
        ref = env.render_frame(32, camera="agentview").transpose(2, 0, 1).astype(np.float32)
        assert np.abs(obs["rgb"] - ref).mean() < 2  # same camera via render_frame (edges may differ slightly)
        frame = env.render_frame(64)
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        with VideoRecorder(tmp_path / "v.mp4", fps=10) as rec:
            for _ in range(3):
                rec.add(frame)
        assert rec.path.is_file() and rec.path.stat().st_size > 0
    finally:
        env.close()


@pytest.mark.skipif(not _can_render(), reason="needs offscreen OpenGL (MUJOCO_GL=egl or osmesa)")
def test_no_reflections_same_eye_in_hand_images():
    """The reflection pass only shows where a camera sees a reflective surface: the eye-in-hand image is the same
    without it, agentview's (the table mirrors the robot) is not."""
    cams = ["robot0_eye_in_hand", "agentview"]
    envs = [make_robosuite_env("can", use_image=True, cameras=cams, image_size=32, seed=0, reflections=r)
            for r in (True, False)]
    try:
        (a, _), (b, _) = (e.reset(seed=0) for e in envs)
        np.testing.assert_array_equal(a["rgb"][:3], b["rgb"][:3])
        assert np.abs(a["rgb"][3:] - b["rgb"][3:]).max() > 10
    finally:
        for e in envs:
            e.close()
