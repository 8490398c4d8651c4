"""GMM PPO: single-step PPO for a Gaussian-mixture policy (the reference's PPO_GMM / VPG_GMM).

Log-prob = the JOINT mixture log-density of the chunk, clamped to [-5, 2] as in the reference. Note that
with a small std (0.1) the joint density of T_p * D_a dims is usually far above e^2, so the clamp saturates
and those samples give no policy gradient [quirk of the reference, kept for comparability; pass
``log_prob_clamp: null`` to score unclamped]. Entropy = weight-averaged component entropy; "std" =
weight-averaged mean std.
"""

from __future__ import annotations

from dppo.algos.ppo_gaussian import FineTunedPolicyPPO
from dppo.policies.gmm import GMMModel


class PPOGMM(FineTunedPolicyPPO, GMMModel):
    """GMM policy fine-tuned with PPO (the reference's PPO_GMM / VPG_GMM): the joint mixture log-prob of the
    chunk, clamped to [-5, 2]; ``network`` (= ``actor_ft``) is trained, ``actor`` is a frozen copy of the initial
    weights."""
