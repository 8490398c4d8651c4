"""Robomimic-style manipulation tasks on robosuite 1.5: Lift, Can, Square and Transport.

The reference runs robomimic's ``EnvRobosuite`` on robosuite 1.4.1. This module builds the same
four tasks directly on robosuite 1.5.2 with the robomimic settings: Panda arm(s), OSC_POSE with *world-frame*
delta inputs (1.5 defaults to the base frame; robosuite <= 1.4 and the robomimic data used the world frame),
control_freq 20, ``reward_shaping=False``, ``ignore_done=True``, no hard reset.

:class:`RobomimicLowdimEnv` is a ``gymnasium.Env`` returning the *raw* robomimic low-dim observation
(concatenation of :data:`LOW_DIM_KEYS` in order: 19 / 23 / 23 / 59 dims) and taking raw robosuite actions
(7 or 14 dims in [-1, 1]). Normalisation with dataset statistics is left to a generic wrapper. Episodes never
terminate (terminated = truncated = False); the multi-step wrapper truncates at ``max_episode_steps``. The reward is
1.0 for every step in which the task is in its success state, and ``info["success"]`` says the same as a bool.

With ``use_image=True`` (:class:`RobomimicImageEnv`) the observation is a dict: ``"state"`` = the proprio keys only
(9 or 18 dims) and ``"rgb"`` = the task's cameras, (3 * n_cams, H, W) float32 in [0, 255], upright (image
convention, not OpenGL's bottom-up rows).

Rendering needs an OpenGL backend: ``MUJOCO_GL=egl`` (default here, libraries in the image) or ``osmesa``
(``apt-get install libosmesa6``). On CPU-only machines both go through Mesa llvmpipe at ~50 ms per frame, ~16 ms
without the reflection pass (``reflections=False``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dppo.envs import tasks
from dppo.envs.video import RenderServer, StateVideo

try:  # gymnasium is a core dependency; the import guard only keeps error messages clear
    import gymnasium as gym
    from gymnasium import spaces
except ImportError as e:  # pragma: no cover
    raise ImportError("dppo.envs.robosuite_tasks needs gymnasium") from e

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


@dataclass(frozen=True)
class TaskSpec:
    """How one robomimic task is built."""

    env_name: str  # robosuite environment class
    robots: tuple[str, ...]
    max_episode_steps: int  # env steps per episode in the reference configs
    cameras: tuple[str, ...]  # cameras of the reference's image variant
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_robots(self) -> int:
        return len(self.robots)

    @property
    def action_dim(self) -> int:
        return 7 * self.n_robots


TASKS: dict[str, TaskSpec] = {
    "lift": TaskSpec("Lift", ("Panda",), 300, ("robot0_eye_in_hand",)),
    "can": TaskSpec("PickPlaceCan", ("Panda",), 300, ("robot0_eye_in_hand",)),
    "square": TaskSpec("NutAssemblySquare", ("Panda",), 400, ("agentview",)),
    "transport": TaskSpec("TwoArmTransport", ("Panda", "Panda"), 800, ("shouldercamera0", "shouldercamera1"),
                          {"env_configuration": "single-arm-opposed"}),
}

_PROPRIO = ("eef_pos", "eef_quat", "gripper_qpos")
#: Proprioceptive keys per task, in the reference's order (the "state" of the image variant).
PROPRIO_KEYS: dict[str, list[str]] = {
    task: [f"robot{i}_{k}" for i in range(spec.n_robots) for k in _PROPRIO] for task, spec in TASKS.items()
}
#: robomimic low-dim keys per task, in the order of the reference configs' ``low_dim_keys``. ``"object"`` is
#: robomimic's name for robosuite's ``"object-state"``.
LOW_DIM_KEYS: dict[str, list[str]] = {task: keys + ["object"] for task, keys in PROPRIO_KEYS.items()}
#: Observation dims: low-dim state (reference obs_dim) and proprio-only state of the image variant.
OBS_DIMS = {"lift": 19, "can": 23, "square": 23, "transport": 59}
PROPRIO_DIMS = {"lift": 9, "can": 9, "square": 9, "transport": 18}
ROBOSUITE_KEY = {"object": "object-state"}  # robomimic key -> robosuite observation key

_ALIASES = {
    "lift": "lift", "can": "can", "pickplacecan": "can", "square": "square", "nutassemblysquare": "square",
    "transport": "transport", "twoarmtransport": "transport",
}


def resolve_task(name: str | dict) -> tuple[str, bool]:
    """Task key and image flag from a reference env name ("can", "can-img"), a robosuite/robomimic env name
    ("PickPlaceCan", "NutAssemblySquare") or a robomimic env_meta dict ({"env_name": ..., "env_kwargs": ...})."""
    if isinstance(name, dict):
        use_cam = bool(name.get("env_kwargs", {}).get("use_camera_obs", False))
        return resolve_task(name["env_name"])[0], use_cam
    key = str(name).strip().lower().replace("_", "")
    img = False
    for suffix in ("-img", "img", "-image", "image"):
        if key.endswith(suffix) and key[: -len(suffix)].rstrip("-") in _ALIASES:
            key, img = key[: -len(suffix)].rstrip("-"), True
            break
    key = key.split("-")[0] if key not in _ALIASES and key.split("-")[0] in _ALIASES else key
    if key not in _ALIASES:
        raise ValueError(f"unknown robomimic task {name!r}; expected one of lift, can, square, transport "
                         f"(or Lift, PickPlaceCan, NutAssemblySquare, TwoArmTransport, with optional '-img')")
    return _ALIASES[key], img


def controller_config(robot: str = "Panda") -> dict:
    """Composite BASIC config with robomimic's OSC_POSE arm (kp 150, critically damped, +-5 cm / +-0.5 rad per
    step, delta input) in the *world* frame, and the default gripper."""
    from robosuite.controllers import load_part_controller_config
    from robosuite.controllers.composite.composite_controller_factory import (
        refactor_composite_controller_config,
    )

    part = load_part_controller_config(default_controller="OSC_POSE")
    part["input_ref_frame"] = "world"
    return refactor_composite_controller_config(part, robot, ["right"])


def _quiet_robosuite() -> None:
    """robosuite logs macro/robot-model warnings on import; they are cosmetic."""
    import logging

    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)


def make_suite_env(task: str, use_image: bool = False, cameras: Sequence[str] | None = None,
                   image_size: int = 96, seed: int | None = None, **kw):
    """The bare robosuite environment of ``task`` with robomimic's settings (keyword args override them)."""
    _quiet_robosuite()
    import robosuite as suite

    task, _ = resolve_task(task)
    spec = TASKS[task]
    cameras = list(cameras) if cameras else list(spec.cameras)
    kwargs: dict[str, Any] = dict(
        robots=list(spec.robots) if spec.n_robots > 1 else spec.robots[0],
        controller_configs=controller_config(spec.robots[0]),
        has_renderer=False,
        has_offscreen_renderer=use_image,
        use_camera_obs=use_image,
        use_object_obs=True,
        reward_shaping=False,
        control_freq=20,
        ignore_done=True,
        horizon=spec.max_episode_steps,
        hard_reset=False,  # as robomimic; also 2-4x faster resets
        seed=seed,
    )
    if use_image:
        _fix_egl_device_env()
        kwargs.update(camera_names=cameras, camera_heights=image_size, camera_widths=image_size,
                      camera_depths=False)
    kwargs.update(spec.env_kwargs)
    kwargs.update(kw)
    return suite.make(spec.env_name, **kwargs)


def _fix_egl_device_env() -> None:
    """robosuite's EGL context parses CUDA_VISIBLE_DEVICES and crashes on an empty string (the usual way to hide
    GPUs from TensorFlow); pin its EGL device to 0 in that case. MUJOCO_EGL_DEVICE_ID takes precedence there."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" and "MUJOCO_EGL_DEVICE_ID" not in os.environ:
        os.environ["MUJOCO_EGL_DEVICE_ID"] = "0"


def reseed(suite_env, seed: int | None) -> None:
    """Give a robosuite env (and its placement samplers, which keep their own reference) a fresh RNG."""
    rng = np.random.default_rng(seed)
    suite_env.rng = rng
    stack = [getattr(suite_env, "placement_initializer", None)]
    while stack:
        sampler = stack.pop()
        if sampler is None:
            continue
        sampler.rng = rng
        stack.extend(getattr(sampler, "samplers", {}).values())


class RobomimicLowdimEnv(gym.Env):
    """A robomimic task as a gymnasium env: raw low-dim observation, raw robosuite action, sparse reward.

    Args:
        task: "lift", "can", "square", "transport" (or a robosuite/robomimic env name, see :func:`resolve_task`).
        low_dim_keys: robomimic keys to concatenate (default :data:`LOW_DIM_KEYS` of the task).
        use_image: dict observation {"state": proprio, "rgb": cameras} instead of the flat low-dim vector.
        cameras, image_size: cameras and square image size of the image observation.
        reflections: render MuJoCo's reflections in camera images; ``False`` is ~3x faster on CPU and leaves the
            eye-in-hand camera's images unchanged (see :func:`dppo.envs.video.serve`).
        seed: seed of the robosuite RNG (object placement, robot init noise); ``reset(seed=...)`` reseeds.
        render_size: frame size of :meth:`render` / videos (agentview).
        **kw: passed to ``robosuite.make`` (e.g. ``lite_physics=False`` for 1.4-exact stepping).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: str = "lift", low_dim_keys: Sequence[str] | None = None, use_image: bool = False,
                 cameras: Sequence[str] | None = None, image_size: int = 96, seed: int | None = None,
                 render_size: int = 256, render_camera: str = "agentview", reflections: bool = True, **kw):
        self.task, _ = resolve_task(task)
        self.spec_task = TASKS[self.task]
        self.use_image = use_image
        self.cameras = list(cameras) if cameras else list(self.spec_task.cameras)
        self.image_size = image_size
        self.low_dim_keys = list(low_dim_keys) if low_dim_keys else list(LOW_DIM_KEYS[self.task])
        self.proprio_keys = [k for k in self.low_dim_keys if k != "object"] if use_image else []
        self.render_size = render_size
        self.render_camera = render_camera
        self.render_mode = "rgb_array"
        # camera images come from a RenderServer child process, never from a GL context in this process (see
        # dppo.envs.video: Mesa's OpenGL and TensorFlow cannot share a process)
        self.suite_env = make_suite_env(self.task, use_image=False, seed=seed, **kw)
        self._cameras = RenderServer(self.suite_env.sim.model._model, self.cameras, image_size,
                                     reflections) if use_image else None
        self._frame_servers: dict[tuple[str, int], RenderServer] = {}
        self._video: StateVideo | None = None
        self._obs_dict: dict[str, np.ndarray] = {}
        self.max_episode_steps = self.spec_task.max_episode_steps

        low, high = self.suite_env.action_spec
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        obs = self.suite_env.reset()
        self._obs_dict = obs
        if use_image:
            state = self._concat(obs, self.proprio_keys)
            self.observation_space = spaces.Dict({
                "state": spaces.Box(-np.inf, np.inf, state.shape, np.float32),
                "rgb": spaces.Box(0, 255, (3 * len(self.cameras), image_size, image_size), np.float32),
            })
        else:
            state = self._concat(obs, self.low_dim_keys)
            self.observation_space = spaces.Box(-np.inf, np.inf, state.shape, np.float32)

    # ------------------------------------------------------------------ observation
    @staticmethod
    def _concat(obs: dict, keys: Sequence[str]) -> np.ndarray:
        try:
            parts = [np.asarray(obs[ROBOSUITE_KEY.get(k, k)], dtype=np.float64).ravel() for k in keys]
        except KeyError as e:
            raise KeyError(f"robosuite observation has no key {e}; available: {sorted(obs)}") from None
        return np.concatenate(parts).astype(np.float32)

    def _images(self) -> np.ndarray:
        """(3 * n_cams, H, W) float32, upright, from the render process."""
        ims = self._cameras.render(self.suite_env.sim.data._data)
        return np.concatenate([im.transpose(2, 0, 1) for im in ims], axis=0).astype(np.float32)

    def _observe(self, obs: dict):
        self._obs_dict = obs
        if self.use_image:
            return {"state": self._concat(obs, self.proprio_keys), "rgb": self._images()}
        return self._concat(obs, self.low_dim_keys)

    @property
    def raw_obs(self) -> dict[str, np.ndarray]:
        """The last robosuite observation dict (all keys)."""
        return self._obs_dict

    def low_dim_state(self) -> np.ndarray:
        """Full raw low-dim state (all of ``LOW_DIM_KEYS``) of the last observation, also in image mode."""
        return self._concat(self._obs_dict, LOW_DIM_KEYS[self.task])

    # ------------------------------------------------------------------ gym API
    def is_success(self) -> bool:
        return bool(self.suite_env._check_success())

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            reseed(self.suite_env, seed)
        if self._video is not None:
            self._video.close()
            self._video = None
        obs = self.suite_env.reset()
        options = options or {}
        if options.get("video_path"):
            self._video = StateVideo(options["video_path"], self.suite_env.sim.model._model, self.render_camera,
                                     self.render_size, fps=options.get("video_fps", 30))
            self._video.add(self.suite_env.sim.data._data)
        return self._observe(obs), {"success": self.is_success()}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape[0] != self.action_space.shape[0]:
            raise ValueError(f"{self.task}: action has {action.shape[0]} dims, expected {self.action_space.shape[0]}")
        obs, _, _, _ = self.suite_env.step(action)
        success = self.is_success()
        if self._video is not None:
            self._video.add(self.suite_env.sim.data._data)
        # the reference's sparse reward: 1 per step spent in the success state; the episode never terminates here
        return self._observe(obs), float(success), False, False, {"success": success}

    def render(self):
        return self.render_frame(self.render_size)

    def render_frame(self, size: int = 256, camera: str | None = None) -> np.ndarray:
        """An upright (size, size, 3) uint8 frame from ``camera`` (default agentview), rendered by a
        ``RenderServer`` child process (one per camera and size, kept for the next call)."""
        key = (camera or self.render_camera, size)
        if key not in self._frame_servers:
            self._frame_servers[key] = RenderServer(self.suite_env.sim.model._model, [key[0]], size)
        return self._frame_servers[key].render(self.suite_env.sim.data._data)[0]

    def close(self):
        if self._video is not None:
            self._video.close()
            self._video = None
        for server in self._frame_servers.values():
            server.close()
        self._frame_servers = {}
        if self._cameras is not None:
            self._cameras.close()
            self._cameras = None
        try:
            self.suite_env.close()
        except Exception:  # robosuite's EGL teardown can complain at exit; nothing to do about it
            pass


class RobomimicImageEnv(RobomimicLowdimEnv):
    """:class:`RobomimicLowdimEnv` with ``use_image=True``: {"state": proprio (9|18), "rgb": (3*n_cams, H, W)}."""

    def __init__(self, task: str = "lift", **kw):
        kw["use_image"] = True
        super().__init__(task, **kw)


def make_robosuite_env(task: str | dict, use_image: bool | None = None, cameras: Sequence[str] | None = None,
                       image_size: int = 96, seed: int | None = None, **kw) -> RobomimicLowdimEnv:
    """Build a robomimic task. ``task`` is "lift"/"can"/"square"/"transport", a robosuite/robomimic env name, a
    reference name with "-img", or a robomimic env_meta dict; ``use_image=None`` takes the image flag from it."""
    key, img = resolve_task(task)
    if isinstance(task, dict):
        meta_kw = dict(task.get("env_kwargs", {}))
        cameras = cameras or meta_kw.get("camera_names")
        image_size = meta_kw.get("camera_heights", image_size) if img else image_size
    use_image = img if use_image is None else use_image
    env_cls = RobomimicImageEnv if use_image else RobomimicLowdimEnv
    if use_image:
        return env_cls(key, cameras=cameras, image_size=image_size, seed=seed, **kw)
    return env_cls(key, cameras=cameras, image_size=image_size, seed=seed, use_image=False, **kw)


tasks.register(tuple(TASKS), make_env=make_robosuite_env)
