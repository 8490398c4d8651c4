import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dppo.data.normalization import Normalization  # noqa: E402
from dppo.envs.bandit import TwoStepBandit  # noqa: E402
from dppo.run import register_resolvers  # noqa: E402

register_resolvers()


gym.register("DppoTestBandit-v0", entry_point=TwoStepBandit)  # dppo/envs/bandit.py


def write_two_mode_dataset(out_dir, n_traj: int = 40, length: int = 25, seed: int = 0) -> str:
    """Obs dim 2 (a constant start state plus time), action dim 2: each trajectory takes one of two modes,
    actions (+0.5, +0.5) or (-0.5, -0.5) plus small noise. Already normalised."""
    rng = np.random.default_rng(seed)
    states, actions = [], []
    for i in range(n_traj):
        sign = 1.0 if i % 2 == 0 else -1.0
        s = np.stack([np.zeros(length), np.linspace(-1, 1, length)], axis=1)
        a = sign * 0.5 + 0.03 * rng.standard_normal((length, 2))
        states.append(s)
        actions.append(a)
    path = os.path.join(out_dir, "train.npz")
    np.savez(path, states=np.concatenate(states).astype(np.float32),
             actions=np.concatenate(actions).astype(np.float32),
             traj_lengths=np.full(n_traj, length, dtype=np.int64))
    return path


@pytest.fixture
def two_mode_dataset(tmp_path):
    return write_two_mode_dataset(str(tmp_path))


@pytest.fixture
def avoid_norm(tmp_path):
    """The Avoid M2 normalisation file (DPPO's released values) in tmp_path; returns its path."""
    path = tmp_path / "normalization.npz"
    Normalization(np.array([0, -0.27974, 0, -0.28194], np.float32),
                  np.array([0.6033, 0.47532, 0.60578, 0.47726], np.float32),
                  np.array([-0.0125, 0], np.float32), np.array([0.0125, 0.0125], np.float32)).save(path)
    return str(path)
