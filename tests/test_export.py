"""SavedModel export of a trained run: one signature, observation -> action chunk."""

import numpy as np
import tensorflow as tf
from test_pretrain import pretrain_cfg

from dppo.export import cli
from dppo.runners.pretrain import TrainDiffusionAgent


def test_export_round_trip(two_mode_dataset, tmp_path):
    run = tmp_path / "run"
    agent = TrainDiffusionAgent(pretrain_cfg(two_mode_dataset, run, n_epochs=1))
    agent.run()
    cli([str(run), "--out", str(tmp_path / "sm")])
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    fn = loaded.signatures["serving_default"]
    out = list(fn(observation=tf.zeros((5, 1, 2))).values())[0].numpy()
    assert out.shape == (5, 1, 2) and np.isfinite(out).all()
    assert np.abs(out).max() <= 1.5  # x0 is clamped to [-1, 1] at every step
