"""Property-based fuzzing (Hypothesis) of the dataset, normalisation and checkpoint loaders: whatever a file holds
- truncated bytes, other dtypes, other shapes, NaNs, missing or extra arrays, pickled objects - loading it either
works or raises the loader's own error (DatasetError / CheckpointError), never another exception."""

import contextlib
import functools
import io
import json
import os
import re
import tempfile
import warnings
from types import SimpleNamespace

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dppo.data.normalization import KEYS, DatasetError, Normalization
from dppo.data.sequence import StitchedSequenceDataset
from dppo.utils import checkpoint as ckpt
from dppo.utils.seeding import restore_generators
from dppo.utils.validate import check_resume, run_record

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
PATH = re.compile(r"/\S+")  # file names, left out of the outcome statistics
DTYPES = ["float32", "float64", "float16", "int64", "int8", "uint8", "bool", "complex64", "U4", "object"]


def odd_array(draw, like: np.ndarray) -> np.ndarray:
    """``like`` with another dtype, shape or NaN/inf values, or an unrelated array."""
    how = draw(st.sampled_from(["dtype", "dtype", "dtype", "shape", "nan", "scalar", "empty", "negative"]))
    if how == "dtype":
        dtype = draw(st.sampled_from(DTYPES))
        if dtype == "object":
            return np.array([{"a": 1}] * max(1, like.size), dtype=object)
        try:
            with warnings.catch_warnings():  # complex -> real drops the imaginary part, with a warning
                warnings.simplefilter("ignore")
                return like.astype(dtype)
        except (TypeError, ValueError):  # a string that is not a number, a pickled object
            return np.zeros(like.shape, dtype)
    if how == "shape":
        shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
        return np.ones(shape, like.dtype)
    if how == "nan" and like.dtype.kind == "f" and like.size:
        out = like.copy()
        out.reshape(-1)[draw(st.integers(0, like.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return out
    if how == "scalar":
        return np.asarray(draw(st.sampled_from([0, -3, 2.5, np.nan, "x"])))
    if how == "negative" and like.dtype.kind in "iuf":
        return -np.abs(like.astype(np.float64)) - 1
    return np.zeros((0,), like.dtype)


def mutated_npz(draw, arrays: dict[str, np.ndarray]) -> bytes:
    """The npz bytes of ``arrays`` after one to three mutations (arrays changed, dropped or added), sometimes cut
    short or with flipped bytes."""
    arrays = dict(arrays)
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["change", "change", "change", "drop", "add"]))
        key = draw(st.sampled_from(sorted(arrays))) if arrays else None
        if what == "change" and key:
            arrays[key] = odd_array(draw, arrays[key])
        elif what == "drop" and key:
            arrays.pop(key)
        elif what == "add":
            arrays[draw(st.sampled_from(["extra", "meta/extra", "images", "rewards"]))] = np.zeros(3)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # object arrays are pickled; the loaders refuse pickles
    raw = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip"]))
    if damage == "truncate":
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
    return bytes(raw)


@contextlib.contextmanager
def written(raw: bytes, name: str):
    """``raw`` as the file ``name`` in a temporary folder (deleted afterwards); yields its path."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(raw)
        yield path


@st.composite
def dataset_files(draw):
    lengths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    n = sum(lengths)
    arrays = {"states": np.linspace(-1, 1, n * 2, dtype=np.float32).reshape(n, 2),
              "actions": np.linspace(-1, 1, n * 3, dtype=np.float32).reshape(n, 3),
              "traj_lengths": np.array(lengths, np.int64)}
    if draw(st.booleans()):
        arrays["images"] = np.zeros((n, 3, 4, 4), np.uint8)
    return (mutated_npz(draw, arrays), draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.booleans()),
            "images" in arrays)


@FUZZ
@given(dataset_files())
def test_dataset_loader_raises_only_dataset_errors(case):
    raw, horizon, cond, check_dims, use_img = case
    with written(raw, "train.npz") as path:
        try:
            ds = StitchedSequenceDataset(path, horizon_steps=horizon, cond_steps=cond, use_img=use_img,
                                         obs_dim=2 if check_dims else None, action_dim=3 if check_dims else None)
        except DatasetError as e:
            event("refused: " + PATH.sub("", str(e))[:40])
            return
    event("loaded")
    actions, obs = ds[len(ds) - 1]  # what loaded is usable
    assert actions.shape == (horizon, ds.actions.shape[1]) and np.isfinite(actions).all()
    assert obs["state"].shape == (cond, ds.states.shape[1]) and np.isfinite(obs["state"]).all()


@st.composite
def normalization_files(draw):
    arrays = {k: np.array([-1.0, 0.0, 1.0], np.float32) * (1 if k.endswith("max") else -1) + 1 for k in KEYS}
    return mutated_npz(draw, arrays)


@FUZZ
@given(normalization_files())
def test_normalization_loader_raises_only_dataset_errors(raw):
    with written(raw, "normalization.npz") as path:
        try:
            norm = Normalization.load(path)
        except DatasetError:
            return
    assert np.isfinite(norm.normalize_obs(np.zeros_like(norm.obs_min))).all()


# ------------------------------------------------------------------------------------------ checkpoints
def fresh_variables() -> dict[str, list[tf.Variable]]:
    return {"model": [tf.Variable(np.zeros((3, 2), np.float32)), tf.Variable(np.zeros(2, np.float32))],
            "optimizer": [tf.Variable(np.int64(0))]}


CFG = {"obs_dim": 2, "action_dim": 3, "horizon_steps": 1, "model": {"network": {"mlp_dims": [8, 8]}}}


@functools.cache
def valid_checkpoint() -> dict[str, np.ndarray]:
    """The arrays of a checkpoint as the runners write it (weights, optimizer step, metadata, run record)."""
    groups = {"model": [tf.Variable(np.ones((3, 2), np.float32)), tf.Variable(np.full(2, 0.5, np.float32))],
              "optimizer": [tf.Variable(np.int64(7))]}
    meta = {"epoch": 4, "rng/rng": np.array([1, 2, 3], np.int64), **run_record(CFG, "pretrain")}
    with tempfile.TemporaryDirectory() as folder:
        return dict(ckpt.load_checkpoint(ckpt.save_checkpoint(os.path.join(folder, "state_4.npz"), groups, meta)))


@st.composite
def checkpoint_files(draw):
    arrays = valid_checkpoint()
    if draw(st.booleans()):
        arrays = {**arrays, "meta/run_config": np.asarray(draw(st.sampled_from(
            ["{", "[1]", "7", json.dumps({"obs_dim": 2})])))}
    return mutated_npz(draw, arrays)


@FUZZ
@given(checkpoint_files())
def test_checkpoint_loader_raises_only_checkpoint_errors(raw):
    variables = fresh_variables()
    holder = SimpleNamespace(rng=tf.random.Generator.from_seed(0))
    with written(raw, "state_4.npz") as path:
        try:
            state = ckpt.load_checkpoint(path)
            check_resume(CFG, "pretrain", state, path)
            ckpt.restore_groups(state, variables)
            epoch = ckpt.meta(state, "epoch", kind=int)
            restore_generators(holder, lambda key: ckpt.meta(state, key))
        except ckpt.CheckpointError:
            return
    assert isinstance(epoch, int)
    assert all(np.isfinite(v.numpy()).all() for vs in variables.values() for v in vs)
