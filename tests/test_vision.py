"""Pixel pipeline: ViT token count, RandomShiftsAug semantics, image conditioning, the Avoid raster, and a
VisionDiffusionMLP pre-training run on tiny raster images; pixel Avoid: the ``avoid_image`` wrapper, the image
data writer, the TCP replay of desired-only paths and the three image configs."""

import csv
from pathlib import Path

import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from dppo.data.normalization import Normalization, unnormalize
from dppo.data.npz import load_npz, write_dataset
from dppo.data.sequence import StitchedSequenceDataset
from dppo.datagen.avoid import write_avoid_image_dataset
from dppo.envs.avoid import PILLAR_XY, START_XY, paths_with_tcp, summarize_paths
from dppo.envs.factory import make_env, make_from_config, make_vector_env, wrap
from dppo.envs.raster import FINISH, OUTSIDE, PILLAR, ROBOT, render_avoid_topdown, world_to_pixel
from dppo.nets.critics import ViTCritic
from dppo.nets.gaussian_mlp import Gaussian_VisionMLP
from dppo.nets.vision_diffusion_mlp import VisionDiffusionMLP
from dppo.nets.vit import RandomShiftsAug, SpatialEmb, VitEncoder, edge_pad
from dppo.run import compose_config
from dppo.runners.pretrain import TrainDiffusionAgent
from dppo.runners.rollout import raw_paths, rollout

TINY_VIT = {"embed_dim": 16, "num_heads": 2, "depth": 1, "embed_style": "embed2", "embed_norm": 0}


def test_vit_96px_gives_121_tokens():
    vit = VitEncoder(num_channel=3, img_h=96, img_w=96, cfg={"embed_dim": 32, "num_heads": 4, "embed_norm": 1})
    x = tf.random.stateless_uniform((1, 3, 96, 96), (0, 0), maxval=255.0)
    assert vit.num_patch == 121 and vit(x).shape == (1, 121, 32)
    assert vit(x, flatten=True).shape == (1, 121 * 32) and vit.repr_dim == 121 * 32
    assert VitEncoder(img_h=96, img_w=96, embed_style="embed1", embed_dim=8, num_heads=2).num_patch == 144


def test_random_shift_is_a_crop_of_the_edge_padded_image():
    x = np.random.default_rng(0).uniform(0, 255, size=(3, 2, 12, 12)).astype(np.float32)
    np.testing.assert_array_equal(edge_pad(tf.constant(x), 4), np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)), "edge"))
    aug = RandomShiftsAug(pad=4, seed=1)
    offsets = np.array([[4, 4], [0, 8], [7, 2]], np.int32)  # (dx, dy) per image
    out = aug.shift(tf.constant(x), tf.constant(offsets)).numpy()
    np.testing.assert_array_equal(out[0], x[0])  # offset (4, 4) is the identity
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)), "edge")
    for i, (dx, dy) in enumerate(offsets):
        np.testing.assert_array_equal(out[i], padded[i, :, dy:dy + 12, dx:dx + 12])

    draw = tf.function(lambda: aug.draw_offsets(4000))
    d = draw().numpy()
    assert d.min() == 0 and d.max() == 8 and len(np.unique(d[:, 0] * 9 + d[:, 1])) == 81  # all 81 shifts occur
    assert abs(np.corrcoef(d[:, 0], d[:, 1])[0, 1]) < 0.1  # independent per axis
    y = tf.function(aug.__call__)(tf.constant(x)).numpy()
    assert y.shape == x.shape and not np.array_equal(draw().numpy(), draw().numpy())


def rgb_cond(b=2, t=1, c=3, size=32, seed=0):
    return {"state": tf.random.stateless_normal((b, 1, 4), (seed, 0)),
            "rgb": tf.random.stateless_uniform((b, t, c, size, size), (seed, 1), maxval=255.0)}


def test_image_conditioning_uses_latest_frames_and_augments_only_in_training():
    net = VisionDiffusionMLP(VitEncoder(num_channel=3, img_h=32, img_w=32, cfg=TINY_VIT), action_dim=2,
                             horizon_steps=2, cond_dim=4, img_cond_steps=1, time_dim=8, mlp_dims=[16, 16, 16],
                             residual_style=True, spatial_emb=8, augment=True)
    assert net.rgb_shape == (1, 3, 32, 32)
    x, t = tf.zeros((2, 2, 2)), tf.constant([1, 2])
    cond = rgb_cond(t=2)
    y = net(x, t, cond).numpy()
    assert y.shape == (2, 2, 2)
    older_changed = {**cond, "rgb": tf.concat([cond["rgb"][:, :1] * 0.0, cond["rgb"][:, 1:]], axis=1)}
    np.testing.assert_allclose(net(x, t, older_changed), y, rtol=1e-6)  # only the latest frame is used
    np.testing.assert_allclose(net(x, t, cond), y, rtol=1e-6)  # no augmentation outside training
    assert not np.allclose(net(x, t, cond, training=True), y)

    two_cams = ViTCritic(VitEncoder(num_channel=6, img_h=32, img_w=32, cfg=TINY_VIT), cond_dim=4, spatial_emb=8,
                         num_img=2, mlp_dims=[16, 16], augment=True)
    cond6 = rgb_cond(c=6)
    v = two_cams(cond6).numpy()
    assert v.shape == (2,) and two_cams.rgb_shape == (1, 6, 32, 32)
    np.testing.assert_allclose(two_cams(cond6, training=True, no_augment=True), v, rtol=1e-6)
    second_cam_changed = {**cond6, "rgb": tf.concat([cond6["rgb"][:, :, :3], cond6["rgb"][:, :, 3:] * 0.5], 2)}
    assert not np.allclose(two_cams(second_cam_changed), v)

    gauss = Gaussian_VisionMLP(VitEncoder(img_h=32, img_w=32, cfg=TINY_VIT), action_dim=2, horizon_steps=2,
                               cond_dim=4, mlp_dims=[16, 16], fixed_std=None, visual_feature_dim=8)
    mean, std = gauss(cond)
    assert mean.shape == std.shape == (2, 4) and np.all(np.abs(mean) <= 1)
    emb = SpatialEmb(num_patch=9, patch_dim=16, prop_dim=4, proj_dim=8)
    assert emb(tf.zeros((2, 9, 16)), tf.zeros((2, 4))).shape == (2, 8)


def test_avoid_raster_draws_scene_and_robot():
    xy = np.array([[0.52, -0.25], [0.3, 0.2]])
    img = render_avoid_topdown(xy, size=96)
    assert img.shape == (2, 3, 96, 96) and img.dtype == np.uint8
    for i, (r, c) in enumerate(world_to_pixel(xy, 96).astype(int)):
        assert tuple(img[i, :, r, c]) == ROBOT
    r, c = world_to_pixel(PILLAR_XY, 96).astype(int).T
    assert all(tuple(img[1, :, ri, ci]) == PILLAR for ri, ci in zip(r, c))
    fr, fc = world_to_pixel(np.array([0.6, 0.4]), 96).astype(int)
    assert tuple(img[0, :, fr, fc]) == FINISH
    assert tuple(img[0, :, 50, 2]) == OUTSIDE  # x = 0.1 lies outside the corridor
    assert not np.array_equal(img[0], img[1])
    assert render_avoid_topdown(xy[:1], size=32).shape == (1, 3, 32, 32)


def write_image_dataset(path, n_traj=12, length=12, seed=0):
    """Actions are a function of the robot position, which only the 32x32 raster shows (state is zero)."""
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.uniform(0.25, 0.75, n_traj * length), rng.uniform(-0.3, 0.45, n_traj * length)], 1)
    actions = np.stack([(xy[:, 0] - 0.5) * 3.0, (xy[:, 1] - 0.075) * 2.5], 1)
    np.savez(path, states=np.zeros((len(xy), 2), np.float32), actions=actions.astype(np.float32),
             images=render_avoid_topdown(xy, size=32), traj_lengths=np.full(n_traj, length, np.int64))
    return str(path)


def test_vision_diffusion_mlp_pretrains(tmp_path):
    data = write_image_dataset(tmp_path / "train.npz")
    net = {"_target_": "dppo.nets.vision_diffusion_mlp.VisionDiffusionMLP",
           "backbone": {"_target_": "dppo.nets.vit.VitEncoder", "obs_shape": [3, 32, 32], "num_channel": 3,
                        "img_h": 32, "img_w": 32, "cfg": TINY_VIT},
           "augment": True, "spatial_emb": 16, "time_dim": 8, "mlp_dims": [32, 32, 32], "residual_style": True,
           "img_cond_steps": 1, "horizon_steps": 1, "action_dim": 2, "cond_dim": 2}
    cfg = OmegaConf.create({
        "_target_": "dppo.runners.pretrain.TrainDiffusionAgent", "logdir": str(tmp_path / "run"), "seed": 0,
        "train": {"n_epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "weight_decay": 1e-6,
                  "lr_scheduler": {"first_cycle_steps": 10, "warmup_steps": 1, "min_lr": 3e-3},
                  "epoch_start_ema": 1, "update_ema_freq": 1, "save_model_freq": 2},
        "model": {"_target_": "dppo.policies.diffusion.DiffusionModel", "network": net, "horizon_steps": 1,
                  "obs_dim": 2, "action_dim": 2, "denoising_steps": 5},
        "train_dataset": {"_target_": "dppo.data.sequence.StitchedSequenceDataset", "dataset_path": data,
                          "use_img": True, "horizon_steps": 1, "cond_steps": 1, "img_cond_steps": 1},
    })
    TrainDiffusionAgent(cfg).run()
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        losses = [float(r["loss/loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 2 and losses[-1] < 0.9 * losses[0], losses


# ------------------------------------------------------------------------------------------ pixel Avoid
ROOT = Path(__file__).resolve().parents[1]


def robot_pixel(img: np.ndarray) -> np.ndarray:
    """Mean (row, col) of the red robot pixels of one (3, H, W) image."""
    return np.argwhere((img.transpose(1, 2, 0) == ROBOT).all(-1)).mean(0)


def test_avoid_image_wrapper_observation():
    env = wrap(make_env("avoiding-m5", stale_obs=False), {"avoid_image": {"image_size": 32}})
    assert set(env.observation_space.spaces) == {"state", "rgb"}
    assert env.observation_space["rgb"].shape == (3, 32, 32)
    obs, _ = env.reset(seed=0)
    for _ in range(12):
        obs, *_ = env.step(np.array([0.01, 0.0125]))
    raw = env.unwrapped.sim.observe()[0]
    assert set(obs) == {"state", "rgb"} and obs["state"].shape == (2,) and obs["rgb"].shape == (3, 32, 32)
    assert obs["state"].dtype == obs["rgb"].dtype == np.float32 and 0 <= obs["rgb"].min() <= obs["rgb"].max() <= 255
    np.testing.assert_allclose(obs["state"], raw[:2])  # desired xy
    np.testing.assert_allclose(robot_pixel(obs["rgb"]), world_to_pixel(raw[2:4], 32) - 0.5, atol=1.0)  # the TCP
    assert np.abs(raw[2:4] - START_XY).max() > 0.05  # it moved (so the red dot is not just the start)


def test_avoid_image_stack_uses_sync_envs_and_normalises_the_2d_state(tmp_path):
    norm = tmp_path / "normalization.npz"
    Normalization(np.zeros(2, np.float32), np.ones(2, np.float32), -np.ones(2, np.float32),
                  np.ones(2, np.float32)).save(norm)
    wrappers = {"avoid_image": {"image_size": 16}, "d3il_lowdim": {"normalization_path": str(norm)},
                "multi_step": {"n_obs_steps": 1, "n_action_steps": 4, "max_episode_steps": 100,
                               "pass_full_observations": True}}
    venv = make_vector_env("avoiding-m5", 2, wrappers)  # batched by default, but images need the sync stack
    assert type(venv).__name__ == "SyncVectorEnv"
    obs, _ = venv.reset(seed=0)
    assert obs["state"].shape == (2, 1, 2) and obs["rgb"].shape == (2, 1, 3, 16, 16)
    np.testing.assert_allclose(obs["state"][:, 0], np.broadcast_to(2 * (START_XY / (1 + 1e-6)) - 1, (2, 2)),
                               atol=1e-5)
    obs, *_ = venv.step(np.zeros((2, 4, 2), np.float32))
    assert obs["rgb"].shape == (2, 1, 3, 16, 16) and obs["rgb"].max() <= 255


def test_tcp_replay_of_desired_paths_matches_the_state_env(tmp_path):
    norm_path = tmp_path / "normalization.npz"
    Normalization(np.array([0, -0.3, 0, -0.3], np.float32), np.array([0.8, 0.5, 0.8, 0.5], np.float32),
                  np.array([-0.0125, 0], np.float32), np.array([0.0125, 0.0125], np.float32)).save(norm_path)
    wrappers = {"d3il_lowdim": {"normalization_path": str(norm_path)},
                "multi_step": {"n_obs_steps": 1, "n_action_steps": 4, "max_episode_steps": 100,
                               "pass_full_observations": True}}
    venv = make_vector_env("avoiding-m5", 6, wrappers)
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    act = lambda _: (tf.constant(rng.uniform(-1, 1, (6, 4, 2)) + [0.0, 0.6], tf.float32), None)  # noqa: E731
    ro = rollout(venv, act, obs, np.ones(6, np.float32), 25, 4)
    paths = raw_paths(ro, Normalization.load(norm_path))
    replayed = paths_with_tcp([p[:, :2] for p in paths])
    for p, q in zip(paths, replayed):
        np.testing.assert_allclose(q, p, atol=1e-5)
    assert summarize_paths(replayed) == summarize_paths(paths)


def test_avoid_image_dataset_writer(tmp_path):
    rng = np.random.default_rng(0)
    trajs = []
    for length in (7, 5):
        desired = np.cumsum(rng.uniform([-0.01, 0.0], [0.01, 0.0125], (length, 2)), 0) + START_XY
        tcp = desired + rng.normal(0, 0.005, (length, 2))
        trajs.append({"states": np.concatenate([desired, tcp], 1), "actions": rng.uniform(-0.01, 0.01, (length, 2))})
    write_dataset(tmp_path / "src", trajs, include_zero=True)
    path = write_avoid_image_dataset(tmp_path / "src", tmp_path / "img", image_size=16)
    data = load_npz(path, obs_dim=2, action_dim=2, use_img=True)
    src = load_npz(tmp_path / "src" / "train.npz")
    assert data["states"].shape == (12, 2) and data["images"].shape == (12, 3, 16, 16)
    assert data["images"].dtype == np.uint8 and np.abs(data["states"]).max() <= 1
    np.testing.assert_array_equal(data["actions"], src["actions"])
    np.testing.assert_array_equal(data["traj_lengths"], [7, 5])
    norm, src_norm = Normalization.load(tmp_path / "img" / "normalization.npz"), \
        Normalization.load(tmp_path / "src" / "normalization.npz")
    raw = np.concatenate([t["states"] for t in trajs])
    np.testing.assert_allclose(unnormalize(data["states"], norm.obs_min, norm.obs_max), raw[:, :2], atol=1e-5)
    np.testing.assert_allclose(norm.obs_min, np.minimum(raw[:, :2].min(0), 0), atol=1e-6)
    np.testing.assert_array_equal(norm.action_min, src_norm.action_min)
    np.testing.assert_array_equal(norm.action_max, src_norm.action_max)
    np.testing.assert_array_equal(data["images"], render_avoid_topdown(raw[:, 2:], size=16))
    ds = StitchedSequenceDataset(path, horizon_steps=4, use_img=True)
    actions, cond = ds[0]
    assert actions.shape == (4, 2) and cond["state"].shape == (1, 2) and cond["rgb"].shape == (1, 3, 16, 16)


def test_avoid_image_configs_compose(tmp_path, monkeypatch):
    monkeypatch.setenv("DPPO_DATA_DIR", "/data")
    monkeypatch.setenv("DPPO_LOG_DIR", "/logs")
    cfgs = {stage: compose_config(ROOT / "cfg" / "d3il" / stage / "avoid_m2", name)
            for stage, name in (("pretrain", "pre_diffusion_mlp_img"), ("finetune", "ft_ppo_diffusion_mlp_img"),
                                ("eval", "eval_diffusion_mlp_img"))}
    pre, ft, ev = cfgs["pretrain"], cfgs["finetune"], cfgs["eval"]
    assert pre.train_dataset_path == "/data/d3il/avoid_m2_img/train.npz" and pre.train_dataset.use_img
    assert ft.normalization_path == ev.normalization_path == "/data/d3il/avoid_m2_img/normalization.npz"
    assert ft._target_.endswith("TrainPPOImgDiffusionAgent") and ft.logdir.startswith("/logs/d3il-finetune/")
    for c in cfgs.values():
        assert (c.obs_dim, c.action_dim, c.denoising_steps, c.horizon_steps) == (2, 2, 20, 4)
    assert (ft.ft_denoising_steps, ft.act_steps, ft.train.n_steps, ft.env.n_envs) == (10, 4, 25, 50)
    for c in (ft, ev):
        assert list(c.env.wrappers) == ["avoid_image", "d3il_lowdim", "multi_step"]
        assert c.env.wrappers.avoid_image.image_size == 32
    nets = [OmegaConf.to_container(n) for n in (pre.model.network, ft.model.actor, ev.model.network)]
    for n in nets:  # the same network everywhere (checkpoints load), augmentation aside
        n.pop("augment")
        assert n["backbone"]["img_h"] == n["backbone"]["img_w"] == 32 and n["cond_dim"] == 2
    assert nets[0] == nets[1] == nets[2]
    assert ft.model.critic.backbone.cfg == ft.model.actor.backbone.cfg
    norm = tmp_path / "normalization.npz"
    Normalization(np.zeros(2, np.float32), np.ones(2, np.float32), -np.ones(2, np.float32),
                  np.ones(2, np.float32)).save(norm)
    env_cfg = OmegaConf.to_container(ev.env)
    env_cfg["n_envs"] = 2
    env_cfg["wrappers"]["d3il_lowdim"]["normalization_path"] = str(norm)
    venv = make_from_config(env_cfg, seed=0)
    assert type(venv).__name__ == "SyncVectorEnv" and venv.reset(seed=0)[0]["rgb"].shape == (2, 1, 3, 32, 32)
