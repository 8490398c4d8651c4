"""Stand-alone policies: the policy file a run writes, ``dppo.load_policy`` (raw observations -> raw actions),
old-style run directories, and the exported SavedModel / TFLite file against the in-process policy."""

import numpy as np
import pytest
import tensorflow as tf
from test_pretrain import pretrain_cfg

import dppo
from dppo.data.normalization import Normalization
from dppo.export import cli
from dppo.policy import Policy
from dppo.runners.pretrain import TrainDiffusionAgent
from dppo.utils.checkpoint import CheckpointError
from dppo.utils.policy_file import assign_weights, canonical_paths, read_policy_file

OBS = np.array([[[0.3, -0.2]], [[0.6, 0.4]], [[0.0, 0.1]]], np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch pre-training run on normalised two-mode data, with a normalisation file."""
    from conftest import write_two_mode_dataset

    tmp = tmp_path_factory.mktemp("run")
    data = write_two_mode_dataset(str(tmp))
    norm = tmp / "normalization.npz"
    Normalization(np.array([0.0, -1.0], np.float32), np.array([1.0, 1.0], np.float32),
                  np.array([-2.0, 10.0], np.float32), np.array([2.0, 20.0], np.float32)).save(norm)
    cfg = pretrain_cfg(data, tmp / "run", n_epochs=1)
    cfg.normalization_path = str(norm)
    cfg.model.network.mlp_dims = [16, 16, 16]
    agent = TrainDiffusionAgent(cfg)
    agent.run()
    return tmp / "run", agent, Normalization.load(norm)


def test_policy_file_round_trip(run):
    logdir, agent, _ = run
    pf = read_policy_file(logdir / "policy.npz")
    assert pf.kind == "diffusion" and set(pf.weights) == {"network"} and pf.normalization is not None
    assert all(not k.startswith("diffusion_mlp") for k in pf.weights["network"])  # paths inside the network
    for name, var in zip(canonical_paths(agent.ema_network.weights), agent.ema_network.weights):
        np.testing.assert_array_equal(pf.weights["network"][name], var.numpy())  # the EMA weights
    a, b = dppo.load_policy(logdir / "policy.npz"), dppo.load_policy(logdir)
    out = a.act(OBS, seed=3)
    assert out.shape == (3, 1, 2)
    np.testing.assert_array_equal(out, b.act(OBS, seed=3))
    np.testing.assert_array_equal(out, a.act(OBS, seed=3))  # the seed restarts the stream
    assert not np.array_equal(out, a.act(OBS, seed=4))


def test_raw_units(run):
    logdir, agent, norm = run
    policy = dppo.load_policy(logdir)
    # the same weights with no normalisation, fed the normalised observation by hand
    plain = Policy(policy.model)
    expect = norm.unnormalize_action(plain.act(norm.normalize_obs(OBS), seed=7))
    np.testing.assert_allclose(policy.act(OBS, seed=7), expect, rtol=1e-5, atol=1e-5)
    act = policy.act(OBS, seed=7)
    assert (act[..., 1] > 5).all()  # action dim 1 spans [10, 20]: a normalised [-1, 1] sample lands in [5, 25]


def test_old_run_directory_still_loads(run, tmp_path):
    logdir, agent, _ = run
    (logdir / "policy.npz").rename(tmp_path / "policy.npz")  # a run written before policy files
    try:
        old = dppo.load_policy(logdir)
        new = dppo.load_policy(tmp_path / "policy.npz")
        np.testing.assert_allclose(old.act(OBS, seed=1), new.act(OBS, seed=1), rtol=1e-6, atol=1e-6)
        ckpt = sorted((logdir / "checkpoint").glob("state_*.npz"))[-1]
        np.testing.assert_allclose(dppo.load_policy(ckpt).act(OBS, seed=1), new.act(OBS, seed=1), atol=1e-6)
    finally:
        (tmp_path / "policy.npz").rename(logdir / "policy.npz")


def test_wrong_architecture_is_named(run):
    logdir, agent, _ = run
    pf = read_policy_file(logdir / "policy.npz")
    other = Policy(agent.model).model.network
    with pytest.raises(CheckpointError, match="missing|shape"):
        assign_weights(other.weights[:-2], pf.weights["network"], "test")


def test_export_reproduces_policy(run, tmp_path, capsys):
    logdir, _, _ = run
    cli([str(logdir / "policy.npz"), "--out", str(tmp_path / "sm")])
    message = capsys.readouterr().out
    policy = dppo.load_policy(logdir)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    seeded = loaded.signatures["seeded"]
    out = seeded(observation=tf.constant(OBS), seed=tf.constant(5, tf.int64))["action"].numpy()
    np.testing.assert_allclose(out, policy.act(OBS, seed=5), atol=1e-5)
    plain = loaded.signatures["serving_default"](observation=tf.constant(OBS))["action"].numpy()
    assert plain.shape == (3, 1, 2) and np.isfinite(plain).all()
    lite = tmp_path / "sm" / "policy.tflite"
    if lite.is_file():
        assert "TFLite: " in message and str(lite) in message
        runner = tf.lite.Interpreter(model_path=str(lite)).get_signature_runner("seeded")
        try:
            got = runner(observation=OBS, seed=np.array(5, np.int64))["action"]
        except RuntimeError as e:  # TensorFlow ops inside: this interpreter may lack the Flex delegate
            assert "Flex" in str(e) or "Select TensorFlow" in str(e)
        else:
            np.testing.assert_allclose(got, policy.act(OBS, seed=5), atol=1e-5)
    else:
        assert "TFLite: not written" in message


def test_export_of_an_old_run_directory(two_mode_dataset, tmp_path):
    run = tmp_path / "run"
    TrainDiffusionAgent(pretrain_cfg(two_mode_dataset, run, n_epochs=1)).run()
    (run / "policy.npz").unlink()
    cli([str(run), "--out", str(tmp_path / "sm"), "--no-tflite"])
    fn = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    out = fn(observation=tf.zeros((5, 1, 2)))["action"].numpy()
    assert out.shape == (5, 1, 2) and np.isfinite(out).all()
    assert np.abs(out).max() <= 1.5  # no normalisation: x0 is clamped to [-1, 1] at every step
