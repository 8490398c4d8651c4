"""mixed_precision (opt-in bf16): the policy is resolved from the config or DPPO_MIXED_PRECISION, hidden layers
compute in bfloat16 while every network output and the PPO / pre-training losses stay float32 and close to the
float32 ones, and a run without it builds float32 networks again."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_ppo_diffusion import learner_of, make_model
from test_pretrain import pretrain_cfg

from dppo.runners.pretrain import TrainDiffusionAgent
from dppo.utils.precision import ENV_VAR, resolve, set_policy


@pytest.fixture(autouse=True)
def float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_resolve(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve(None) == "float32" and resolve("bf16") == "mixed_bfloat16"
    assert resolve("mixed_bfloat16") == "mixed_bfloat16"
    monkeypatch.setenv(ENV_VAR, "bf16")
    assert resolve(None) == "mixed_bfloat16" and resolve("float32") == "float32"  # the config wins
    with pytest.raises(ValueError, match="mixed_precision"):
        resolve("float16")


def test_bf16_networks_output_float32_and_losses_stay_close():
    set_policy("float32")
    ref = make_model(k=5, kp=3)
    set_policy("mixed_bfloat16")
    m = make_model(k=5, kp=3)
    set_policy("float32")
    assert m.actor_ft.mlp.first.compute_dtype == "bfloat16" and m.actor_ft.mlp.last.compute_dtype == "float32"
    for a, b in zip(ref.network.weights + ref.actor_ft.weights + ref.critic.weights,
                    m.network.weights + m.actor_ft.weights + m.critic.weights):
        assert b.dtype == "float32"
        b.assign(a)
    cond = {"state": tf.random.normal((16, 1, 3), seed=1)}
    action, chain = m.act(cond, False)
    assert action.dtype == chain.dtype == m.critic(cond).dtype == tf.float32
    _, chain = ref.act(cond, False)
    lr, lm = learner_of(ref), learner_of(m)
    v, lp = lr.score(cond, chain)
    args = (cond, chain, tf.random.normal((16,), seed=2), v, tf.random.normal((16,), seed=3), lp)
    tr, tm = lr.loss(*args), lm.loss(*args)
    assert all(tm[k].dtype == tf.float32 for k in tm)
    np.testing.assert_allclose(float(tm["v_loss"]), float(tr["v_loss"]), rtol=2e-2)
    np.testing.assert_allclose(lm.score(cond, chain)[1], lp, atol=2e-2)  # per-transition log-probs


def test_pretraining_in_bf16_then_float32_again(two_mode_dataset, tmp_path):
    cfg = pretrain_cfg(two_mode_dataset, tmp_path / "bf16", n_epochs=2)
    cfg.mixed_precision = "mixed_bfloat16"
    agent = TrainDiffusionAgent(cfg)
    assert agent.model.network.mlp.first.compute_dtype == "bfloat16"
    assert np.isfinite(agent.run()["loss"])
    cfg = pretrain_cfg(two_mode_dataset, tmp_path / "fp32", n_epochs=1)
    agent = TrainDiffusionAgent(cfg)  # mixed_precision unset: float32 networks again
    assert agent.model.network.mlp.first.compute_dtype == "float32"
