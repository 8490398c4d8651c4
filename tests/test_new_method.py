"""A new single-step method is its policy's log-probability and nothing else (docs/architecture.md, "Adding a
method"): a Laplace policy written here, trained by the shared PPO learner on a one-step bandit (reward
-|a - 0.6|), moves its location to the optimum."""

import numpy as np
import tensorflow as tf

from dppo.algos.ppo import PPOBatch, PPOLearner
from dppo.algos.ppo_gaussian import SingleStepPolicy
from dppo.nets.critics import CriticObs
from dppo.utils.optim import AdamW
from dppo.utils.seeding import tf_stream


class PPOLaplace(SingleStepPolicy, tf.Module):
    """Laplace(loc, scale) over a 1-step, 1-dim chunk; loc is the only policy parameter."""

    def __init__(self, scale: float = 0.2):
        super().__init__()
        self.loc = tf.Variable(0.0)
        self.scale = scale
        self.critic = CriticObs(1, mlp_dims=[8])
        self.critic(tf.zeros((1, 1, 1)))
        self._init_ppo(clip_ploss_coef=0.2, clip_vloss_coef=None, norm_adv=True, log_prob_clamp=(-5.0, 2.0))
        self.rng = tf_stream(0, "sampling")

    def trainable_actor_variables(self):
        return [self.loc]

    def sample_for_rollout(self, cond, deterministic):
        u = self.rng.uniform((tf.shape(cond["state"])[0], 1, 1), -0.5, 0.5)
        return self.loc - self.scale * tf.sign(u) * tf.math.log1p(-2.0 * tf.abs(u))

    def policy_terms(self, cond, samples, training):
        log_prob = -tf.abs(samples[:, 0, 0] - self.loc) / self.scale - tf.math.log(2.0 * self.scale)
        return log_prob, {"entropy": tf.fill(tf.shape(log_prob), 1.0 + float(np.log(2 * self.scale)))}


def test_a_laplace_policy_learns_with_the_shared_learner():
    policy = PPOLaplace()
    learner = PPOLearner(policy, AdamW(policy.trainable_actor_variables(), 0.05),
                         AdamW(policy.critic.trainable_variables, 1e-2), seed=0)
    cond = {"state": tf.zeros((256, 1, 1))}
    for _ in range(15):
        action, sample = policy.act(cond, deterministic=False)
        values, log_probs = learner.score(cond, sample)
        reward = -tf.abs(action[:, 0, 0] - 0.6)
        batch = PPOBatch(cond, sample, reward, values, reward - values, log_probs)
        learner.update(batch, True, batch_size=64, update_epochs=4, vf_coef=0.5, ent_coef=0.0, target_kl=None)
    assert abs(float(policy.loc) - 0.6) < 0.15, float(policy.loc)
