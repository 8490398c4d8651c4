"""Micro-batching (``PPOLearner(micro_batch=...)``, ``train.micro_batch``): a minibatch computed in uneven row chunks
gives the whole minibatch's loss, terms and gradients, and the same weights after an update of several minibatches,
for DPPO, Gaussian PPO and PPOEntDiffusion's row-mean hooks; hooks that cannot be split are refused."""

import numpy as np
import pytest
import tensorflow as tf

from dppo.algos.dpoer import DPOERDiffusion, PPOEntDiffusion
from dppo.algos.ppo import TERMS, PPOBatch, PPOLearner, prepare_advantages
from dppo.algos.ppo_diffusion import PPODiffusion
from dppo.algos.ppo_gaussian import PPOGaussian
from dppo.nets.critics import CriticObs
from dppo.nets.diffusion_mlp import DiffusionMLP
from dppo.nets.gaussian_mlp import Gaussian_MLP
from dppo.utils.optim import AdamW

N = 11  # env steps in the test minibatch: chunks of 4, 4 and 3


def diffusion(cls=PPODiffusion, **kw):
    net = lambda: DiffusionMLP(2, 2, 3, time_dim=8, mlp_dims=[16, 16, 16], residual_style=True)  # noqa: E731
    return cls(actor=net(), actor_ft=net(), critic=CriticObs(3, [16, 16]), ft_denoising_steps=3, horizon_steps=2,
               obs_dim=3, action_dim=2, denoising_steps=5, seed=1, clip_ploss_coef=0.05, clip_ploss_coef_base=0.02,
               clip_vloss_coef=0.2, clip_advantage_lower_quantile=0.1, clip_advantage_upper_quantile=0.85, **kw)


def gaussian():
    mk = lambda: Gaussian_MLP(2, 2, 3, mlp_dims=[16, 16], fixed_std=0.1, learn_fixed_std=True)  # noqa: E731
    model = PPOGaussian(mk(), CriticObs(3, mlp_dims=[16, 16]), actor_ft=mk(), horizon_steps=2, clip_ploss_coef=0.05,
                        clip_vloss_coef=0.2, seed=1)
    model.clip_adv_quantiles = (0.1, 0.85)  # no constructor option here; ppo_terms reads it the same way
    return model


MODELS = {"dppo": diffusion, "gaussian": gaussian, "ppo_ent": lambda: diffusion(PPOEntDiffusion)}


def learner_of(model, micro_batch=None, grad_accumulate=1):
    return PPOLearner(model, AdamW(model.trainable_actor_variables(), 1e-2),
                      AdamW(model.critic.trainable_variables, 1e-2), seed=0, grad_accumulate=grad_accumulate,
                      micro_batch=micro_batch)


def batch_of(model, n=N, seed=0):
    """Rollout-like data whose old log-probs and values are off the current policy, so ratios leave the clip range
    and values the value clip; advantages with outliers, so the quantile clip bites."""
    rng = np.random.default_rng(seed)
    cond = {"state": tf.constant(rng.normal(size=(n, 1, 3)), tf.float32)}
    if isinstance(model, PPODiffusion):
        _, samples = model.act(cond, deterministic=False)  # chains
    else:
        samples = tf.constant(rng.uniform(-0.8, 0.8, (n, 2, 2)), tf.float32)
    lp, _ = model.transition_log_probs(cond, samples)
    adv = rng.standard_t(2, size=n) * 3.0 + 1.0
    return PPOBatch(cond, samples, tf.constant(rng.normal(size=n), tf.float32),
                    model.critic(cond) + tf.constant(rng.normal(size=n) * 0.3, tf.float32),
                    tf.constant(adv, tf.float32), lp + tf.constant(rng.normal(size=lp.shape) * 0.1, tf.float32))


def all_vars(learner):
    p = learner.policy
    return [*p.trainable_actor_variables(), *p.critic.trainable_variables,
            *[v for opt, _ in learner.extra_optimizers for v in opt.params]]


def gradients(learner, batch, i, fn=None):
    fn = fn or learner.minibatch_gradients
    loss, terms, grads = tf.function(lambda i: fn(batch, i, all_vars(learner), 0.5, 0.01))(i)
    return float(loss), {k: float(v) for k, v in terms.items()}, [g.numpy() for g in grads]


def assert_same(a, b, rtol=1e-5):
    (la, ta, ga), (lb, tb, gb) = a, b
    assert lb == pytest.approx(la, rel=rtol, abs=1e-7)
    assert ta.keys() == tb.keys() and set(TERMS) <= set(ta)
    for k in ta:
        assert tb[k] == pytest.approx(ta[k], rel=rtol, abs=1e-7), k
    for x, y in zip(ga, gb):
        np.testing.assert_allclose(y, x, rtol=rtol, atol=rtol * np.abs(x).max() + 1e-9)


@pytest.mark.parametrize("name", list(MODELS))
def test_chunks_give_the_whole_minibatch_loss_terms_and_gradients(name):
    model = MODELS[name]()
    batch = batch_of(model)
    i = tf.constant(np.random.default_rng(1).permutation(N), tf.int32)
    whole = gradients(learner_of(model), batch, i)
    assert 0.0 < whole[1]["clipfrac"] < 1.0 and any(np.abs(g).max() > 0 for g in whole[2])
    chunked = learner_of(model, micro_batch=4)
    assert_same(whole, gradients(chunked, batch, i))
    assert_same(whole, gradients(learner_of(model, micro_batch=N), batch, i))  # one chunk
    assert_same(whole, gradients(learner_of(model, micro_batch=100), batch, i))  # a chunk larger than the minibatch

    # the test can fail: the plain mean of the three chunks' means (equal weights) is not the minibatch's mean
    adv = prepare_advantages(model, tf.gather(batch.advantages, i))
    parts = [gradients(chunked, batch, i[s:s + 4], lambda b, j, v, vf, ent, s=s: chunked.rows_gradients(
        b, j, adv[s:s + 4], v, vf, ent, adv_prepared=True)) for s in (0, 4, 8)]
    equal_weights = np.mean([p[0] for p in parts])
    assert abs(equal_weights - whole[0]) > 1e-3 * abs(whole[0])


@pytest.mark.parametrize("name, grad_accumulate", [("dppo", 1), ("dppo", 2), ("gaussian", 2)])
def test_an_update_of_several_minibatches_ends_at_the_same_weights(name, grad_accumulate):
    model = MODELS[name]()
    batch = batch_of(model, n=16)
    trained = all_vars(learner_of(model))
    start = [v.numpy() for v in trained]
    ends, outs = [], []
    for micro_batch in (None, 2):  # minibatches of 5 env steps: chunks of 2, 2 and 1
        for v, s in zip(trained, start):
            v.assign(s)
        learner = learner_of(model, micro_batch, grad_accumulate)
        outs.append(learner.update(batch, True, batch_size=5, update_epochs=2, vf_coef=0.5, ent_coef=0.01,
                                   target_kl=None))
        ends.append([v.numpy() for v in all_vars(learner)])
    assert outs[0]["n_minibatches"] == outs[1]["n_minibatches"] == 6
    for k in ("loss", *TERMS):
        assert outs[1][k] == pytest.approx(outs[0][k], rel=1e-4, abs=1e-6), k
    moved = [not np.array_equal(a, s) for a, s in zip(ends[0], start)]
    assert any(moved)
    for a, b in zip(*ends):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_target_kl_stops_on_the_whole_minibatch_kl():
    model = diffusion()
    batch = batch_of(model, n=16)
    trained = all_vars(learner_of(model))
    start = [v.numpy() for v in trained]
    outs = []
    for micro_batch in (None, 2):
        for v, s in zip(trained, start):
            v.assign(s)
        outs.append(learner_of(model, micro_batch).update(batch, True, batch_size=5, update_epochs=2, vf_coef=0.5,
                                                          ent_coef=0.0, target_kl=1e-9))
    assert outs[0]["n_minibatches"] == outs[1]["n_minibatches"] == 1  # stopped after the first minibatch
    assert outs[1]["approx_kl"] == pytest.approx(outs[0]["approx_kl"], rel=1e-5)


def test_hooks_that_cannot_be_split_are_refused():
    with pytest.raises(ValueError, match="micro_batch.*DPOERDiffusion"):
        learner_of(diffusion(DPOERDiffusion), micro_batch=4)
    learner_of(diffusion(DPOERDiffusion))  # whole minibatches: fine
    with pytest.raises(ValueError, match="micro_batch"):
        learner_of(diffusion(), micro_batch=-1)
    assert learner_of(diffusion(), micro_batch=0).micro_batch == 0  # 0 and null: off


def test_the_distributed_learner_refuses_micro_batches():
    from dppo.algos.distributed import MirroredPPOLearner
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = diffusion()
        opts = AdamW(model.trainable_actor_variables(), 1e-2), AdamW(model.critic.trainable_variables, 1e-2)
    with pytest.raises(ValueError, match="micro_batch.*distribute"):
        MirroredPPOLearner(strategy, model, *opts, seed=0, micro_batch=4)
