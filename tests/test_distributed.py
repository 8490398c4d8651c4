"""train.distribute: MirroredStrategy over two logical CPU devices gives the one-device losses and weights for the
same global batch (PPO update and pre-training). Runs in a subprocess: logical devices must be configured before
TensorFlow starts, and the test session's TensorFlow has long started."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, "TESTS")
    from omegaconf import OmegaConf
    from conftest import write_two_mode_dataset
    from test_ppo_diffusion import make_model
    from test_pretrain import pretrain_cfg
    from dppo.algos.distributed import MirroredPPOLearner, make_strategy, scope
    from dppo.algos.ppo import PPOBatch, PPOLearner
    from dppo.runners.pretrain import TrainDiffusionAgent
    from dppo.utils.optim import AdamW

    out = {}
    strategy = make_strategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2

    # --- PPO: the same batch, 2 epochs of minibatches of 7 env steps (odd: shares of 3 and 4 rows)
    kw = dict(k=5, kp=3, clip_advantage_lower_quantile=0.1, clip_advantage_upper_quantile=0.9,
              clip_vloss_coef=0.2)
    def learner(strat, grad_accumulate):
        with scope(strat):
            m = make_model(**kw)
            # eps 1e-6: PyTorch's 1e-8 turns the rounding-level gradients of some weights (summed in another order
            # over two devices) into Adam steps of a tenth of lr, which is not what this test compares
            opts = (AdamW(m.trainable_actor_variables(), 1e-2, 1e-3, epsilon=1e-6, max_grad_norm=1.0),
                    AdamW(m.critic.trainable_variables, 1e-2, epsilon=1e-6))
        return m, (PPOLearner(m, *opts, seed=0, grad_accumulate=grad_accumulate) if strat is None
                   else MirroredPPOLearner(strat, m, *opts, seed=0, grad_accumulate=grad_accumulate))
    rng = np.random.default_rng(0)
    n = 30
    cond = {"state": tf.constant(rng.standard_normal((n, 1, 3)).astype(np.float32))}
    for acc in (1, 2):
        (m1, l1), (m2, l2) = learner(None, acc), learner(strategy, acc)
        for a, b in zip(m1.trainable_actor_variables() + m1.critic.trainable_variables,
                        m2.trainable_actor_variables() + m2.critic.trainable_variables):
            b.assign(a)
        chains = m1.sample(cond, return_chain=True)[1]
        v, lp = l1.score(cond, chains)
        batch = PPOBatch(cond, chains, tf.constant(rng.standard_normal(n).astype(np.float32)), v,
                         tf.constant(rng.standard_normal(n).astype(np.float32)), lp)
        w0 = [x.numpy() for x in m1.trainable_actor_variables() + m1.critic.trainable_variables]
        u1 = l1.update(batch, True, 7, 2, 0.5, 0.01, None)
        u2 = l2.update(batch, True, 7, 2, 0.5, 0.01, None)
        w1 = [x.numpy() for x in m1.trainable_actor_variables() + m1.critic.trainable_variables]
        w2 = [x.numpy() for x in m2.trainable_actor_variables() + m2.critic.trainable_variables]
        # every device's copy of a weight is the same
        copies = strategy.experimental_local_results(m2.critic.trainable_variables[0].value)
        out[f"ppo_acc{acc}"] = {"u1": u1, "u2": u2,
                                "w_maxdiff": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)),
                                "w_change": max(float(np.abs(a - b).max()) for a, b in zip(w0, w1)),
                                "copies_equal": bool(np.array_equal(copies[0].numpy(), copies[1].numpy())),
                                "mirrored": type(m2.critic.trainable_variables[0].value).__name__}

    # --- pre-training: two runs of 3 epochs, batch 37 (the last batch of each epoch is partial)
    data = write_two_mode_dataset("TMP", n_traj=10, length=25)
    losses, weights = {}, {}
    for name, dist in (("one", None), ("two", ["/cpu:0", "/cpu:1"])):
        cfg = pretrain_cfg(data, "TMP/" + name, n_epochs=3, batch_size=37, save_model_freq=3, distribute=dist)
        agent = TrainDiffusionAgent(cfg)
        agent.run()
        rows = (open("TMP/" + name + "/metrics.csv").read().splitlines())
        head = rows[0].split(",")
        losses[name] = [float(r.split(",")[head.index("loss/loss")]) for r in rows[1:]]
        weights[name] = [w.numpy() for w in agent.ema_network.weights + agent.model.network.weights]
    out["pretrain"] = {"losses": losses, "w_maxdiff": max(float(np.abs(a - b).max())
                                                          for a, b in zip(weights["one"], weights["two"]))}

    # --- the PPO runner end to end (Avoid, 2 iterations): one device, mirrored, and mirrored stopped + resumed
    from test_finetune_runner import avoid_cfg
    from dppo.data.normalization import Normalization
    from dppo.runners.ppo import TrainPPODiffusionAgent
    norm = "TMP/normalization.npz"
    Normalization(np.array([0, -0.27974, 0, -0.28194], np.float32),
                  np.array([0.6033, 0.47532, 0.60578, 0.47726], np.float32),
                  np.array([-0.0125, 0], np.float32), np.array([0.0125, 0.0125], np.float32)).save(norm)
    keys = ("train/avg_episode_reward", "loss/pg_loss", "loss/v_loss", "loss/approx_kl")
    runs = {}
    two = ["/cpu:0", "/cpu:1"]
    for name, dist, n_itr in (("one", None, 2), ("two", two, 2), ("two_stop", two, 1)):
        cfg = avoid_cfg("TMP/ppo_" + name, norm, **{"train.n_train_itr": n_itr, "train.distribute": dist})
        runs[name] = [{k: float(h[k]) for k in keys} for h in TrainPPODiffusionAgent(cfg).run()]
    cfg.train.n_train_itr = 2
    cfg.resume = True
    agent = TrainPPODiffusionAgent(cfg)
    assert agent.strategy.num_replicas_in_sync == 2 and isinstance(agent.learner, MirroredPPOLearner)
    runs["two_resumed"] = runs["two_stop"] + [{k: float(h[k]) for k in keys} for h in agent.run()]
    out["runner"] = {k: v for k, v in runs.items() if k != "two_stop"}
    print("RESULT " + json.dumps(out))
''')


def test_mirrored_two_devices_match_one_device(tmp_path):
    code = SCRIPT.replace("TESTS", str(ROOT / "tests")).replace("TMP", str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    for acc in (1, 2):
        r = out[f"ppo_acc{acc}"]
        assert r["mirrored"] == "MirroredVariable" and r["copies_equal"]
        assert r["u1"]["n_minibatches"] == r["u2"]["n_minibatches"] == 8  # 2 epochs x (30 // 7)
        for key, a in r["u1"].items():  # loss terms of the last minibatch, mean clipfrac
            assert abs(a - r["u2"][key]) <= 1e-5 + 1e-4 * abs(a), (acc, key, a, r["u2"][key])
        assert r["w_change"] > 1e-3 and r["w_maxdiff"] < 1e-5, r  # the update moved the weights, equally
    p = out["pretrain"]
    assert len(p["losses"]["one"]) == 3
    for a, b in zip(p["losses"]["one"], p["losses"]["two"]):
        assert abs(a - b) <= 1e-5 + 1e-4 * abs(a), p
    assert p["w_maxdiff"] < 1e-5, p
    runs = out["runner"]  # the same rollouts (the sampler's stream is the one-device one) and the same update
    for name in ("two", "two_resumed"):
        assert len(runs[name]) == len(runs["one"]) == 2
        for itr, (a, b) in enumerate(zip(runs["one"], runs[name])):
            for key in a:
                assert abs(a[key] - b[key]) <= 1e-6 + 1e-4 * abs(a[key]), (name, itr, key, a[key], b[key])


def test_the_distributed_loss_keeps_a_row_mean_extra_loss_and_refuses_others():
    """PPOEntDiffusion's entropy bonus (a row mean) is part of each replica's loss: one replica gives the
    one-device loss and weights; DPOER's whole-minibatch entropy estimate cannot be split and is refused."""
    import numpy as np
    import tensorflow as tf
    from test_micro_batch import batch_of, diffusion, learner_of

    from dppo.algos.distributed import MirroredPPOLearner
    from dppo.algos.dpoer import DPOERDiffusion, PPOEntDiffusion
    from dppo.utils.optim import AdamW

    def weights(m):
        return [*m.trainable_actor_variables(), *m.critic.trainable_variables]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    plain_model = diffusion(PPOEntDiffusion)
    with strategy.scope():
        model = diffusion(PPOEntDiffusion)
        opts = AdamW(model.trainable_actor_variables(), 1e-2), AdamW(model.critic.trainable_variables, 1e-2)
    for a, b in zip(weights(plain_model), weights(model)):
        b.assign(a)
    batch = batch_of(plain_model)
    u1 = learner_of(plain_model).update(batch, True, 11, 1, 0.5, 0.01, None)
    u2 = MirroredPPOLearner(strategy, model, *opts, seed=0).update(batch, True, 11, 1, 0.5, 0.01, None)
    assert u2["loss"] == pytest.approx(u1["loss"], rel=1e-5)
    for a, b in zip(weights(plain_model), weights(model)):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7)
    with strategy.scope():
        model = diffusion(DPOERDiffusion)
        opts = AdamW(model.trainable_actor_variables(), 1e-2), AdamW(model.critic.trainable_variables, 1e-2)
    with pytest.raises(ValueError, match="distribute.*DPOERDiffusion"):
        MirroredPPOLearner(strategy, model, *opts, seed=0)
