"""Scripted demonstrators for the robomimic tasks (Lift, Can, Square, Transport) and a dataset writer.

The reference pre-trains on robomimic's human "MH" datasets, which cannot be downloaded here. These scripted
demonstrators read object poses from the simulator and drive the end effector with P-control on world-frame
position/orientation deltas (the OSC_POSE action of :mod:`dppo.envs.robosuite_tasks`), clipped to [-1, 1].

To make the data multimodal and imperfect like human teleoperation, every episode draws a *style* (speed, gain,
approach height, Ornstein-Uhlenbeck action noise, pause probability) and every grasp draws waypoint offsets and,
where the object allows it, one of two grasp strategies (e.g. the cube's two face pairs, two carry paths). Failed
grasps are retried like a human would. Only successful episodes are kept (robomimic style); each ends a few steps
after the task first reports success.

Command line (also ``dppo data robomimic``)::

    python -m dppo.datagen.robosuite --task lift --n 100 --seed 0      # -> data/robomimic/lift/
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dppo.data.npz import write_dataset
from dppo.envs.robosuite_tasks import TASKS, RobomimicLowdimEnv, make_robosuite_env, resolve_task

# Panda grip site pointing straight down with yaw 0: site x (finger axis) = world y, site z = world -z.
R_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
POS_SCALE = 0.05  # OSC_POSE output limit: action 1 = 5 cm goal offset
ROT_SCALE = 0.5  # action 1 = 0.5 rad
OPEN, CLOSE = -1.0, 1.0

Target = Callable[[], np.ndarray] | np.ndarray | None


# ---------------------------------------------------------------------------------------------- geometry
def rot_z(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def down(yaw: float) -> np.ndarray:
    """Top-down gripper orientation whose fingers close along the horizontal direction yaw + 90 deg."""
    return rot_z(yaw) @ R_DOWN


def rotvec(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (robust near 0 and pi)."""
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    if angle > math.pi - 1e-4:  # axis from the symmetric part
        M = (R + np.eye(3)) / 2.0
        axis = np.sqrt(np.clip(np.diag(M), 0.0, None))
        i = int(np.argmax(axis))
        axis = M[:, i] / math.sqrt(max(M[i, i], 1e-12))
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2.0 * math.sin(angle))
    return axis * angle


def yaw_of(R: np.ndarray) -> float:
    """Yaw of a body's x axis in the horizontal plane."""
    return math.atan2(R[1, 0], R[0, 0])


def gripper_yaw(R: np.ndarray) -> float:
    """Yaw of a (roughly top-down) grip-site orientation, in the convention of :func:`down`."""
    f = R[:, 0]  # finger axis = (-sin yaw, cos yaw, 0)
    return math.atan2(-f[0], f[1])


def wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def grasp_yaws(obj_yaw: float, period: float, home: float, limit: float = math.radians(100)) -> list[float]:
    """Gripper yaws equivalent under the object's symmetry ``period``, within ``limit`` of ``home``, nearest first."""
    cands = []
    for k in range(-4, 5):
        y = obj_yaw + k * period
        d = wrap(y - home)
        if abs(d) <= limit:
            cands.append(home + d)
    cands = sorted(set(round(c, 9) for c in cands), key=lambda c: abs(c - home))
    return cands or [home]


# ---------------------------------------------------------------------------------------------- style / noise
@dataclass
class Style:
    """Per-episode randomisation of the demonstrator (the 'operator')."""

    speed: float  # max translation action (1 = 5 cm goal offset per step)
    kp: float  # translation P gain (action per 5 cm of error)
    kr: float  # rotation P gain
    ou_sigma: float  # OU noise scale (action units)
    ou_theta: float
    pause_prob: float  # chance of a short idle before a motion segment
    hover: float  # approach height above grasp points (m)
    jitter: float  # std of waypoint offsets (m)
    alt_strategy: float  # probability of the second grasp strategy

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Style:
        theta = rng.uniform(0.1, 0.3)
        # OU stationary std sigma / sqrt(2 theta - theta^2) drawn in [0.03, 0.12] action units
        return cls(speed=rng.uniform(0.6, 1.0), kp=rng.uniform(3.0, 6.0), kr=rng.uniform(1.2, 2.5),
                   ou_sigma=rng.uniform(0.03, 0.12) * math.sqrt(2 * theta - theta**2), ou_theta=theta,
                   pause_prob=rng.uniform(0.0, 0.25), hover=rng.uniform(0.06, 0.16), jitter=rng.uniform(0.002, 0.006),
                   alt_strategy=0.35)


class OUNoise:
    def __init__(self, dim: int, sigma: float, theta: float, rng: np.random.Generator):
        self.x = np.zeros(dim)
        self.sigma, self.theta, self.rng = sigma, theta, rng

    def __call__(self) -> np.ndarray:
        self.x += -self.theta * self.x + self.sigma * self.rng.standard_normal(self.x.shape)
        return self.x


# ---------------------------------------------------------------------------------------------- controller
class Scripted:
    """Base demonstrator: per-arm pose targets, P-control to them, action noise, a generator of actions.

    Subclasses implement :meth:`script`, a generator that yields once per env step ("tick", mostly through
    :meth:`move`, :meth:`wait` and :meth:`pick`) after updating the pose targets and gripper commands, reading
    object poses live from the simulator. Iterating the script object turns the ticks into env actions.
    """

    def __init__(self, env: RobomimicLowdimEnv, rng: np.random.Generator, style: Style | None = None):
        self.env = env
        self.sim = env.suite_env.sim
        self.robots = env.suite_env.robots
        self.n = len(self.robots)
        self.rng = rng
        self.style = style or Style.sample(rng)
        self.grip = [OPEN] * self.n
        self.noise = [OUNoise(6, self.style.ou_sigma, self.style.ou_theta, rng) for _ in range(self.n)]
        self.targets: list[tuple[Target, Target]] = []
        for i in range(self.n):
            p, R = self.eef(i)
            self.targets.append((p.copy(), down(gripper_yaw(R))))
        self.home_yaw = [gripper_yaw(self.eef(i)[1]) for i in range(self.n)]
        self.speed_scale = [1.0] * self.n
        self.paused = [False] * self.n
        self.t = 0

    # --- simulator reads
    def eef(self, i: int = 0) -> tuple[np.ndarray, np.ndarray]:
        sid = self.robots[i].eef_site_id["right"]
        return self.sim.data.site_xpos[sid].copy(), self.sim.data.site_xmat[sid].reshape(3, 3).copy()

    def body(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        bid = self.sim.model.body_name2id(name)
        return self.sim.data.body_xpos[bid].copy(), self.sim.data.body_xmat[bid].reshape(3, 3).copy()

    def site(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        sid = self.sim.model.site_name2id(name)
        return self.sim.data.site_xpos[sid].copy(), self.sim.data.site_xmat[sid].reshape(3, 3).copy()

    def gripper_width(self, i: int = 0) -> float:
        q = self.env.raw_obs[f"robot{i}_gripper_qpos"]
        return float(q[0] - q[1])

    # --- control
    @staticmethod
    def _eval(x: Target):
        return x() if callable(x) else x

    def arm_error(self, i: int) -> tuple[float, float]:
        """Position (m) and rotation (rad) error of arm i to its target."""
        p, R = self.eef(i)
        tp, tR = (self._eval(x) for x in self.targets[i])
        perr = 0.0 if tp is None else float(np.linalg.norm(tp - p))
        rerr = 0.0 if tR is None else float(np.linalg.norm(rotvec(tR @ R.T)))
        return perr, rerr

    def arm_action(self, i: int) -> np.ndarray:
        """6-D P-control action of arm i towards its target (translation speed-limited, rotation clipped)."""
        p, R = self.eef(i)
        tp, tR = (self._eval(x) for x in self.targets[i])
        act = np.zeros(6)
        if tp is not None:
            v = self.style.kp * (tp - p) / POS_SCALE
            vmax = self.style.speed * self.speed_scale[i]
            n = np.linalg.norm(v)
            act[:3] = v * (vmax / n) if n > vmax else v
        if tR is not None:
            act[3:] = np.clip(self.style.kr * rotvec(tR @ R.T) / ROT_SCALE, -1.0, 1.0)
        return act

    def action(self) -> np.ndarray:
        """The env action for the current targets: P-control + OU noise per arm (zero for a pausing arm)."""
        acts = []
        for i in range(self.n):
            noise = self.noise[i]() * np.array([1, 1, 1, 0.5, 0.5, 0.5])
            a = np.zeros(6) if self.paused[i] else np.clip(self.arm_action(i) + noise, -1.0, 1.0)
            acts.append(np.concatenate([a, [self.grip[i]]]))
        self.t += 1
        return np.concatenate(acts)

    def set_target(self, i: int, pos: Target = None, rot: Target = None) -> None:
        old_p, old_R = self.targets[i]
        self.targets[i] = (old_p if pos is None else pos, old_R if rot is None else rot)

    # --- script building blocks: generators that yield once per env step ("tick")
    def move(self, targets: dict[int, tuple[Target, Target]], grip: dict[int, float] | None = None,
             tol: float = 0.01, rot_tol: float = 0.08, max_steps: int = 80, min_steps: int = 0,
             speed: float = 1.0, stall: int = 10, abort: Callable[[], bool] | None = None) -> Iterator[None]:
        """Set pose targets for some arms and tick until those arms are within tolerance, ``abort()`` is true,
        ``max_steps`` passed, or they made no progress for ``stall`` steps (blocked by a surface or at the edge
        of the workspace: a person would move on too)."""
        for i, (p, R) in targets.items():
            self.set_target(i, p, R)
            self.speed_scale[i] = speed
        for i, g in (grip or {}).items():
            self.grip[i] = g
        if self.rng.random() < self.style.pause_prob:
            yield from self.pause(list(targets), int(self.rng.integers(2, 9)))
        hist: list[float] = []
        for k in range(max_steps):
            errs = [self.arm_error(i) for i in targets]
            if k >= min_steps and all(pe < tol and re < rot_tol for pe, re in errs):
                return
            if abort is not None and abort():
                return
            hist.append(sum(pe + 0.1 * re for pe, re in errs))
            if k >= max(min_steps, stall) and hist[-1 - stall] - hist[-1] < 0.002:
                return
            yield

    def wait(self, steps: int, grip: dict[int, float] | None = None) -> Iterator[None]:
        """Hold the current targets (e.g. while a gripper closes)."""
        for i, g in (grip or {}).items():
            self.grip[i] = g
        for _ in range(steps):
            yield

    def pause(self, arms: list[int], steps: int) -> Iterator[None]:
        """An idle operator: zero motion for these arms, grippers unchanged."""
        for i in arms:
            self.paused[i] = True
        try:
            for _ in range(steps):
                yield
        finally:
            for i in arms:
                self.paused[i] = False

    @staticmethod
    def parallel(*gens: Iterator[None]) -> Iterator[None]:
        """Run several per-arm scripts side by side, one tick each per env step, until all have finished."""
        active = list(gens)
        while active:
            still = []
            for g in active:
                try:
                    next(g)
                    still.append(g)
                except StopIteration:
                    pass
            active = still
            if active:
                yield

    def hold_action(self) -> np.ndarray:
        return self.action()

    def jit(self, scale: float = 1.0, z: bool = False) -> np.ndarray:
        j = self.rng.normal(0.0, self.style.jitter * scale, 3)
        if not z:
            j[2] = 0.0
        return j

    def script(self) -> Iterator[None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        """The actions of the script, one per env step; the script reads the simulator between steps."""
        for _ in self.script():
            yield self.action()

    # --- a reusable top-down pick
    def pick(self, i: int, grasp_pos: Callable[[], np.ndarray], yaw: float, lift_to: float,
             obj_height: Callable[[], float], lifted_by: float = 0.03, retries: int = 2,
             close_steps: tuple[int, int] = (6, 12), clear_z: float | None = None) -> Iterator[None]:
        """Hover above ``grasp_pos``, descend, close, lift to z=``lift_to``; retry if the object stayed down.
        With ``clear_z`` (objects inside bins) the gripper first rises to that height and travels above it.
        Sets ``self.picked`` to whether the object rose by ``lifted_by``."""
        self.picked = False
        R = down(yaw)
        for _ in range(retries + 1):
            h0 = obj_height()
            hover = self.style.hover * self.rng.uniform(0.8, 1.2)
            off = self.jit()
            if clear_z is not None:  # up, across above the bin walls, then down to the hover point
                hover = max(hover, clear_z - float(grasp_pos()[2]))
                p = self.eef(i)[0]
                if p[2] < clear_z - 0.005:
                    yield from self.move({i: (np.array([p[0], p[1], clear_z + 0.01]), None)}, tol=0.015,
                                         max_steps=40)
            # over the object (tracking it), then straight down
            yield from self.move({i: (lambda o=off + [0, 0, hover]: grasp_pos() + o, R)}, {i: OPEN}, tol=0.015,
                                 rot_tol=0.1, max_steps=120)
            yield from self.move({i: (lambda o=off: grasp_pos() + o, R)}, tol=0.006, rot_tol=0.06, max_steps=70,
                                 speed=self.rng.uniform(0.4, 0.8))
            yield from self.wait(int(self.rng.integers(*close_steps)), {i: CLOSE})
            p = self.eef(i)[0]
            yield from self.move({i: (np.array([p[0], p[1], lift_to]) + self.jit(z=True), R)}, tol=0.02,
                                 max_steps=60, speed=self.rng.uniform(0.5, 1.0), min_steps=5)
            if obj_height() > h0 + lifted_by and self.gripper_width(i) > 0.002:
                self.picked = True
                return
            # missed: open, back off upwards, and try again with a fresh offset
            yield from self.wait(int(self.rng.integers(4, 8)), {i: OPEN})
            yaw = yaw + self.rng.normal(0.0, 0.05)
            R = down(yaw)


# ---------------------------------------------------------------------------------------------- tasks
class LiftScript(Scripted):
    """Reach above the cube, descend, grasp across one of its two face pairs, lift."""

    def script(self) -> Iterator[None]:
        cube = lambda: self.body("cube_main")[0]  # noqa: E731
        cands = grasp_yaws(yaw_of(self.body("cube_main")[1]), math.pi / 2, self.home_yaw[0])
        yaw = cands[1] if len(cands) > 1 and self.rng.random() < self.style.alt_strategy else cands[0]
        z_table = self.env.suite_env.model.mujoco_arena.table_offset[2]
        # grasp a little below the cube's centre or near its top, as different operators do
        dz = self.rng.uniform(-0.008, 0.006)
        yield from self.pick(0, lambda: cube() + [0, 0, dz], yaw, lift_to=z_table + self.rng.uniform(0.12, 0.25),
                             obj_height=lambda: cube()[2], lifted_by=0.045)


class CanScript(Scripted):
    """Grasp the can from the top at a random yaw, carry it over the target bin (direct or high arc), lower and
    release it, retract."""

    def script(self) -> Iterator[None]:
        env = self.env.suite_env
        can_body = env.objects[env.object_id].root_body
        can = lambda: self.body(can_body)[0]  # noqa: E731
        yaw = self.home_yaw[0] + self.rng.uniform(-0.9, 0.9)
        carry_z = self.rng.uniform(0.98, 1.06)
        dz = self.rng.uniform(-0.015, 0.005)
        yield from self.pick(0, lambda: can() + [0, 0, dz], yaw, lift_to=carry_z,
                             obj_height=lambda: can()[2], lifted_by=0.05)
        if not self.picked:
            return
        # the can's compartment of bin 2 spans x in [0.10, 0.295], y in [0.28, 0.525] between dividers at x=0.10 and
        # y=0.28; its far corner is at the edge of the Panda's reach (base at (-0.5, -0.1)), so aim at its near part
        # while keeping the can (radius 3.3 cm) clear of the dividers
        target = env.target_bin_placements[env.object_id].copy()
        target[:2] = [self.rng.uniform(0.15, 0.19), self.rng.uniform(0.33, 0.37)]
        R = down(yaw + self.rng.uniform(-0.3, 0.3))
        if self.rng.random() < self.style.alt_strategy:  # high arc via a mid-point
            mid = (self.eef(0)[0] + np.array([target[0], target[1], carry_z])) / 2 + [0, 0, 0.08]
            yield from self.move({0: (mid, R)}, tol=0.04, max_steps=80)
        yield from self.move({0: (np.array([target[0], target[1], carry_z]), R)}, tol=0.02, max_steps=120)
        # lower until the can is just above the bin floor, then let go
        release_z = target[2] + self.rng.uniform(0.16, 0.21)
        yield from self.move({0: (np.array([target[0], target[1], release_z]), None)}, tol=0.01, max_steps=80,
                             speed=self.rng.uniform(0.4, 0.8))
        yield from self.wait(int(self.rng.integers(4, 9)), {0: OPEN})
        p = self.eef(0)[0]
        yield from self.move({0: (p + [0, 0, self.rng.uniform(0.1, 0.18)], None)}, tol=0.02, max_steps=60)


class SquareScript(Scripted):
    """Grasp the square nut's handle, carry it above the square peg with the hole aligned, lower it, release.
    A dropped nut is picked up again from wherever it fell."""

    def script(self) -> Iterator[None]:
        env = self.env.suite_env
        nut = env.nuts[env.nut_id]
        nut_body = nut.root_body
        handle_site = nut.important_sites["handle"]
        nut_pose = lambda: self.body(nut_body)  # noqa: E731
        handle = lambda: self.site(handle_site)[0]  # noqa: E731
        peg = self.sim.data.body_xpos[env.peg1_body_id].copy()

        def dropped() -> bool:
            return self.gripper_width(0) < 0.004 or np.linalg.norm(nut_pose()[0] - self.eef(0)[0]) > 0.12

        def eef_goal(height: float) -> tuple[np.ndarray, np.ndarray]:
            # gripper pose that puts the nut's centre at peg + height with the hole aligned to the peg
            p, R = self.eef(0)
            npos, nR = nut_pose()
            rel_p = R.T @ (npos - p)  # nut in the gripper frame (re-read each step: the grasp may slip)
            rel_R = R.T @ nR
            nut_yaw = yaw_of(nR)
            turn = wrap(round(nut_yaw / (math.pi / 2)) * (math.pi / 2) - nut_yaw)  # square: period 90 deg
            goal_R = rot_z(turn) @ nR @ rel_R.T
            goal_p = peg + [0, 0, height] - goal_R @ rel_p
            return goal_p, goal_R

        for _ in range(3):
            # the handle extends along the nut's x axis: fingers close across it (yaw = nut yaw, period pi)
            cands = grasp_yaws(yaw_of(nut_pose()[1]), math.pi, self.home_yaw[0], limit=math.radians(120))
            yaw = cands[1] if len(cands) > 1 and self.rng.random() < self.style.alt_strategy else cands[0]
            carry_z = self.rng.uniform(1.02, 1.12)
            grip_off = np.array([0, 0, self.rng.uniform(-0.005, 0.008)])
            yield from self.pick(0, lambda off=grip_off: handle() + off, yaw, lift_to=carry_z,
                                 obj_height=lambda: nut_pose()[0][2], lifted_by=0.05)
            if not self.picked:
                return
            hi = self.rng.uniform(0.12, 0.18)
            carry = self.rng.uniform(0.45, 0.75)  # a heavy, swinging nut: move more carefully than with a cube
            yield from self.move({0: (lambda h=hi: eef_goal(h)[0], lambda h=hi: eef_goal(h)[1])}, tol=0.006,
                                 rot_tol=0.04, max_steps=150, speed=carry, abort=dropped)
            if dropped():
                continue
            yield from self.move({0: (lambda: eef_goal(0.06)[0], lambda: eef_goal(0.06)[1])}, tol=0.004,
                                 rot_tol=0.03, max_steps=80, speed=0.4, abort=dropped)
            if dropped():
                continue
            yield from self.move({0: (lambda: eef_goal(0.0)[0], None)}, tol=0.006, max_steps=60,
                                 speed=self.rng.uniform(0.3, 0.6))
            yield from self.wait(int(self.rng.integers(4, 9)), {0: OPEN})
            p = self.eef(0)[0]
            yield from self.move({0: (p + [0, 0, self.rng.uniform(0.08, 0.15)], None)}, tol=0.02, max_steps=60)
            if env._check_success():
                break


class TransportScript(Scripted):
    """Two-arm transport, done by both arms at once where the task allows it.

    Arm 0: lift the lid off the start bin and put it down beside the bin, pick the hammer by the end of its
    handle that faces arm 0, carry it to the middle with the handle along y. Arm 1 meanwhile: pick the trash
    cube out of the target bin, drop it into the trash bin, wait near the middle. Hand-over: arm 1 grasps the
    handle next to the head, arm 0 lets go and retracts, arm 1 drops the hammer into the target bin.
    """

    def script(self) -> Iterator[None]:
        env = self.env.suite_env
        tr = env.transport
        self.hand_y = self.rng.uniform(-0.04, -0.01)  # where arm 0 presents the handle
        self.hand_x = self.rng.uniform(-0.08, 0.08)
        self.hand_z = self.rng.uniform(1.05, 1.12)
        yield from self.parallel(self.arm0_fetch(tr), self.arm1_trash(tr))
        if not self.picked0:
            return
        yield from self.handover(tr)

    # --- hammer geometry
    def hammer_axis(self) -> np.ndarray:
        return self.body(self.env.suite_env.transport.payload.root_body)[1][:, 2]  # handle axis, towards head

    def hammer_point(self, s: float) -> np.ndarray:
        p, R = self.body(self.env.suite_env.transport.payload.root_body)
        return p + R[:, 2] * s

    def arm0_fetch(self, tr) -> Iterator[None]:
        self.picked0 = False
        lid_body = tr.lid.root_body
        lid_yaw = yaw_of(self.body(lid_body)[1])
        # the lid handle is thin along the lid's x axis: fingers close along x
        yaw = grasp_yaws(lid_yaw - math.pi / 2, math.pi, self.home_yaw[0])[0]
        dz = self.rng.uniform(0.0, 0.01)
        yield from self.pick(0, lambda: np.array(tr.lid_handle_pos) + [0, 0, dz], yaw,
                             lift_to=self.rng.uniform(1.08, 1.15), obj_height=lambda: self.body(lid_body)[0][2],
                             lifted_by=0.03)
        if not self.picked:
            return
        put = np.array([self.rng.uniform(-0.22, -0.14), self.rng.uniform(-0.45, -0.41), 0.0])
        yield from self.move({0: (put + [0, 0, self.eef(0)[0][2]], None)}, tol=0.02, max_steps=100,
                             speed=self.rng.uniform(0.5, 0.8))
        yield from self.move({0: (put + [0, 0, self.rng.uniform(0.9, 0.95)], None)}, tol=0.01, max_steps=50)
        yield from self.wait(int(self.rng.integers(4, 8)), {0: OPEN})
        p = self.eef(0)[0]
        yield from self.move({0: (np.array([p[0], p[1], self.rng.uniform(1.06, 1.12)]), None)}, tol=0.02,
                             max_steps=40)
        # via a point in front of the arm: the straight line can pass too close to the arm's own base (y=-0.81),
        # where the Panda cannot stay high
        via = np.array([self.rng.uniform(-0.05, 0.08), self.rng.uniform(-0.45, -0.38), self.rng.uniform(1.05, 1.1)])
        yield from self.move({0: (via, None)}, tol=0.04, max_steps=60)
        # hammer: grip the handle on the side facing arm 0 (towards -y)
        axis = self.hammer_axis()
        sigma = 1.0 if axis[1] >= 0 else -1.0
        # The gap between the tables is 60 cm and the bases are 1.62 m apart, so both arms work near full
        # stretch at the hand-over, where the OSC gets sluggish: arm 0 presents the handle slightly on its own
        # side and the grips are 13-15 cm apart, arm 1's next to the head (close to the centre of mass, which
        # sits 6 cm from the handle centre: a two-finger grip on the round handle is twisted out by the weight
        # when held far from it, so arm 0, holding further out, carries gently).
        self.s0 = -sigma * self.rng.uniform(0.045, 0.06)
        self.s1 = sigma * self.rng.uniform(0.085, 0.095)
        phi = math.atan2(axis[1], axis[0])  # fingers across the handle: finger axis = phi + 90 deg -> yaw = phi
        yaw = grasp_yaws(phi, math.pi, self.home_yaw[0])[0]
        root = tr.payload.root_body
        yield from self.pick(0, lambda: self.hammer_point(self.s0) + [0, 0, 0.004], yaw,
                             lift_to=self.rng.uniform(1.08, 1.15), obj_height=lambda: self.body(root)[0][2],
                             lifted_by=0.05, clear_z=self.rng.uniform(1.02, 1.08))
        if not self.picked:
            return
        self.picked0 = True

        def present() -> tuple[np.ndarray, np.ndarray]:
            # gripper pose that puts the held handle point at the hand-over spot with the handle along +-y
            p, R = self.eef(0)
            a = self.hammer_axis()
            turn = wrap(math.pi / 2 - math.atan2(a[1], a[0]))
            turn = wrap(turn - math.pi) if abs(turn) > math.pi / 2 else turn  # handle direction mod pi
            goal_R = rot_z(turn) @ R
            hp = self.hammer_point(self.s0)
            goal_p = np.array([self.hand_x, self.hand_y, self.hand_z]) - goal_R @ (R.T @ (hp - p))
            return goal_p, goal_R

        def dropped() -> bool:
            return self.gripper_width(0) < 0.01 or np.linalg.norm(self.hammer_point(self.s0) - self.eef(0)[0]) > 0.05

        yield from self.move({0: (lambda: present()[0], lambda: present()[1])}, tol=0.01, rot_tol=0.05,
                             max_steps=150, speed=self.rng.uniform(0.4, 0.65), abort=dropped)
        if dropped():
            self.picked0 = False
            self.set_target(0, self.eef(0)[0], self.eef(0)[1])

    def arm1_trash(self, tr) -> Iterator[None]:
        trash = tr.trash.root_body
        cube = lambda: self.body(trash)[0]  # noqa: E731
        cands = grasp_yaws(yaw_of(self.body(trash)[1]), math.pi / 2, self.home_yaw[1])
        yaw = cands[1] if len(cands) > 1 and self.rng.random() < self.style.alt_strategy else cands[0]
        dz = self.rng.uniform(-0.006, 0.004)
        yield from self.pick(1, lambda: cube() + [0, 0, dz], yaw, lift_to=self.rng.uniform(1.05, 1.12),
                             obj_height=lambda: cube()[2], lifted_by=0.04, clear_z=self.rng.uniform(1.0, 1.06))
        bin_pos = np.array(tr.trash_bin_pos)
        drop = bin_pos + np.r_[self.rng.uniform(-0.05, 0.05, 2), 0.0]
        yield from self.move({1: (drop + [0, 0, self.eef(1)[0][2] - bin_pos[2]], None)}, tol=0.02, max_steps=100)
        yield from self.move({1: (drop + [0, 0, self.rng.uniform(0.13, 0.17)], None)}, tol=0.01, max_steps=40)
        yield from self.wait(int(self.rng.integers(4, 8)), {1: OPEN})
        # wait near the hand-over spot, above where the free end of the handle will be
        stage = np.array([self.hand_x, 0.2, self.hand_z + 0.12]) + self.jit(3.0, z=True)
        yield from self.move({1: (stage, down(self.home_yaw[1]))}, tol=0.03, max_steps=100)

    def handover(self, tr) -> Iterator[None]:
        a = self.hammer_axis()
        yaw = grasp_yaws(math.atan2(a[1], a[0]), math.pi, self.home_yaw[1])[0]
        R1 = down(yaw)
        # near the edge of both arms' workspace the OSC is sluggish: be patient (long stall window)
        yield from self.move({1: (lambda: self.hammer_point(self.s1) + [0, 0, 0.06], R1)}, {1: OPEN}, tol=0.01,
                             rot_tol=0.06, max_steps=100, stall=25)
        yield from self.move({1: (lambda: self.hammer_point(self.s1), R1)}, tol=0.005, rot_tol=0.05,
                             max_steps=80, speed=0.8, stall=30)
        # hold still while closing: a target that tracks the held hammer would ratchet both hands upwards
        for i in (0, 1):
            self.set_target(i, *self.eef(i))
        yield from self.wait(int(self.rng.integers(10, 16)), {1: CLOSE})
        if self.gripper_width(1) < 0.01:  # missed the handle: arm 0 keeps it, no hand-over
            return
        yield from self.wait(int(self.rng.integers(6, 10)), {0: OPEN})
        # arm 0 lets go: straight up first (open fingers slid along the handle drag the hammer), then back
        p0 = self.eef(0)[0]
        yield from self.move({0: (p0 + [0, 0, 0.07], None)}, tol=0.015, max_steps=25)
        yield from self.move({0: (np.array([p0[0], -0.35, p0[2] + 0.08]), None)}, tol=0.03, max_steps=30)

        def dropped() -> bool:
            return self.gripper_width(1) < 0.01 or np.linalg.norm(self.hammer_point(self.s1) - self.eef(1)[0]) > 0.05

        if dropped():
            return
        target = np.array(tr.target_bin_pos) + np.r_[self.rng.uniform(-0.03, 0.03, 2), 0.0]
        # a slight turn only: a fast wrist rotation twists the hammer out of a two-finger grip on its handle
        R = rot_z(self.rng.uniform(-0.25, 0.25)) @ self.eef(1)[1]

        def over(h: float) -> np.ndarray:
            p = self.eef(1)[0]
            mid = self.hammer_point(0.0)  # centre the hammer, not the grip, over the bin
            return target + [0, 0, h] + (p - mid) * [1, 1, 0]

        yield from self.move({1: (lambda: over(0.3), R)}, tol=0.02, rot_tol=0.08, max_steps=150,
                             speed=self.rng.uniform(0.3, 0.5), abort=dropped)
        if dropped():
            return
        yield from self.move({1: (lambda: over(0.2), None)}, tol=0.015, max_steps=50, speed=0.4)
        yield from self.wait(int(self.rng.integers(5, 9)), {1: OPEN})
        yield from self.move({1: (self.eef(1)[0] + [0, 0, 0.1], None)}, tol=0.02, max_steps=40)


SCRIPTS: dict[str, type[Scripted]] = {
    "lift": LiftScript, "can": CanScript, "square": SquareScript, "transport": TransportScript,
}


# ---------------------------------------------------------------------------------------------- episodes
def run_episode(env: RobomimicLowdimEnv, task: str, seed: int, rng: np.random.Generator,
                max_steps: int | None = None, tail: tuple[int, int] = (2, 10)) -> tuple[dict, bool]:
    """One scripted episode. Returns the raw trajectory (states before each action, actions, rewards, terminals,
    images in image mode) and whether it succeeded. Ends ``tail`` steps after the first success."""
    obs, _ = env.reset(seed=seed)
    script = SCRIPTS[task](env, rng)
    gen = iter(script)
    max_steps = max_steps or TASKS[task].max_episode_steps
    extra = int(rng.integers(*tail))
    states, actions, rewards, images = [], [], [], []
    success_at = None
    for t in range(max_steps):
        a = next(gen, None)
        if a is None:
            a = script.hold_action()
        if env.use_image:
            states.append(obs["state"])
            images.append(obs["rgb"].astype(np.uint8))
        else:
            states.append(obs)
        actions.append(np.asarray(a, dtype=np.float32))
        obs, r, _, _, info = env.step(a)
        rewards.append(r)
        if info["success"] and success_at is None:
            success_at = t
        if success_at is not None and t - success_at >= extra:
            break
    traj = {"states": np.asarray(states, np.float32), "actions": np.asarray(actions, np.float32),
            "rewards": np.asarray(rewards, np.float32), "terminals": np.zeros(len(actions), bool)}
    if images:
        traj["images"] = np.asarray(images, np.uint8)
    return traj, success_at is not None and bool(rewards[-1] > 0)


def default_out(task: str, use_image: bool) -> Path:
    root = Path(os.environ.get("DPPO_DATA_DIR", "data"))
    return root / "robomimic" / (task + ("-img" if use_image else ""))


def collect(task: str, n: int, seed: int = 0, use_image: bool = False, out: str | Path | None = None,
            max_attempts: int | None = None, attempts_report: int = 50, verbose: bool = True,
            write: bool = True, reflections: bool = True, image_size: int = 96) -> dict:
    """Run scripted episodes until ``n`` succeed (or ``max_attempts``, default 3n + 20), keep the successful
    ones and write them with :func:`write_dataset` (``include_zero=True``, the reference's robomimic quirk).
    ``image_size`` is the cameras' square size; ``reflections=False`` renders camera images without MuJoCo's
    reflection pass (faster; see the env).

    Returns statistics: attempts, successes, success rate overall and over the first ``attempts_report``
    attempts, trajectory lengths, transitions, wall time and the output path.
    """
    task, img_from_name = resolve_task(task)
    use_image = use_image or img_from_name
    if task not in SCRIPTS:
        raise ValueError(f"no scripted demonstrator for {task!r}")
    max_attempts = max_attempts if max_attempts is not None else 3 * n + 20
    env = make_robosuite_env(task, use_image=use_image, seed=seed, reflections=reflections, image_size=image_size)
    trajs, outcomes, steps_total = [], [], 0
    t0 = time.time()
    try:
        attempt = 0
        while len(trajs) < n and attempt < max_attempts:
            rng = np.random.default_rng([seed, attempt])
            traj, ok = run_episode(env, task, seed=seed * 100_003 + attempt, rng=rng)
            steps_total += len(traj["actions"])
            outcomes.append(ok)
            if ok:
                trajs.append(traj)
            attempt += 1
            if verbose:
                print(f"\r[{task}] attempt {attempt}: {len(trajs)}/{n} successful "
                      f"({np.mean(outcomes):.0%}), {time.time() - t0:.0f}s", end="", file=sys.stderr, flush=True)
    finally:
        env.close()
        if verbose:
            print(file=sys.stderr)
    wall = time.time() - t0
    lengths = np.array([len(t["actions"]) for t in trajs], dtype=int)
    k = min(attempts_report, len(outcomes))
    stats = {
        "task": task, "use_image": use_image, "attempts": len(outcomes), "successes": len(trajs),
        "success_rate": float(np.mean(outcomes)) if outcomes else 0.0,
        "report_attempts": k, "report_success_rate": float(np.mean(outcomes[:k])) if k else 0.0,
        "n_traj": len(trajs), "n_transitions": int(lengths.sum()),
        "len_min": int(lengths.min()) if len(lengths) else 0, "len_mean": float(lengths.mean()) if len(lengths) else 0,
        "len_max": int(lengths.max()) if len(lengths) else 0,
        "wall_s": wall, "env_steps": steps_total, "steps_per_s": steps_total / max(wall, 1e-9), "out": None,
    }
    if write and trajs:
        out_dir = Path(out) if out else default_out(task, use_image)
        stats["out"] = str(write_dataset(out_dir, trajs, include_zero=True))
    return stats


def format_stats(s: dict) -> str:
    lines = [
        f"task {s['task']}{' (images)' if s['use_image'] else ''}: {s['successes']}/{s['attempts']} attempts "
        f"succeeded ({s['success_rate']:.1%}); first {s['report_attempts']} attempts: "
        f"{s['report_success_rate']:.1%}",
        f"dataset: {s['n_traj']} trajectories, {s['n_transitions']} transitions, lengths "
        f"{s['len_min']}-{s['len_max']} (mean {s['len_mean']:.1f})",
        f"time: {s['wall_s']:.1f} s for {s['env_steps']} env steps ({s['steps_per_s']:.0f} steps/s)",
    ]
    lines.append(f"written: {s['out']}" if s["out"] else "nothing written (no successful episode or --no-write)")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="dppo data robomimic",
                                description="Collect scripted demonstrations for a robomimic task (only successes "
                                            "are kept) and write train.npz + normalization.npz.")
    p.add_argument("--task", choices=sorted(TASKS), default="lift")
    p.add_argument("--n", type=int, default=100, help="successful demonstrations to keep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output dir (default $DPPO_DATA_DIR|data/robomimic/<task>[-img])")
    p.add_argument("--images", action="store_true", help="also record the task's camera images "
                                                         "(slow on CPU: ~50 ms per frame)")
    p.add_argument("--image-size", type=int, default=96, help="square camera image size (the reference: 96)")
    p.add_argument("--no-reflections", dest="reflections", action="store_false",
                   help="render images without MuJoCo's reflection pass (~3x faster on CPU; the eye-in-hand "
                        "camera's images are the same)")
    p.add_argument("--max-attempts", type=int, default=None, help="give up after this many episodes "
                                                                  "(default 3n+20)")
    p.add_argument("--attempts-report", type=int, default=50,
                   help="also report the success rate over the first this-many attempts")
    p.add_argument("--no-write", action="store_true", help="only measure the success rate")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    stats = collect(a.task, a.n, seed=a.seed, use_image=a.images, out=a.out, max_attempts=a.max_attempts,
                    attempts_report=a.attempts_report, verbose=not a.quiet, write=not a.no_write,
                    reflections=a.reflections, image_size=a.image_size)
    print(format_stats(stats))
    return stats


if __name__ == "__main__":
    cli()
