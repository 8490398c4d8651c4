"""Generalised advantage estimation over the chunk-level time axis."""

from __future__ import annotations

import numpy as np


def gae(rewards: np.ndarray, values: np.ndarray, next_value: np.ndarray, terminated: np.ndarray,
        gamma: float, gae_lambda: float, truncated: np.ndarray | None = None,
        final_values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns for (n_steps, n_envs) arrays.

    delta_t = r_t + gamma V_{t+1} (1 - term_t) - V_t ;  A_t = delta_t + gamma lambda (1 - term_t) A_{t+1};
    V_{n_steps} = ``next_value``. Only ``terminated`` cuts the recursion in the reference, so when an env
    truncates and resets itself within a step it bootstraps from the first value of the next episode [quirk].
    Passing ``truncated`` (steps after which a truncated env reset itself) and ``final_values`` (V of the
    observation that episode ended in) fixes it: the episode's last delta bootstraps from its own final
    state and the recursion stops there. A truncation without a reset (the last step of a rollout) needs
    nothing: its next value is already the episode's own.
    """
    n_steps = len(rewards)
    adv = np.zeros_like(rewards, dtype=np.float32)
    last = np.zeros(rewards.shape[1:], np.float32)
    for t in reversed(range(n_steps)):
        v_next = next_value if t == n_steps - 1 else values[t + 1]
        cont = 1.0 - terminated[t]
        if truncated is not None:
            cut = truncated[t] & ~terminated[t].astype(bool)
            v_next = np.where(cut, final_values[t], v_next)
            carry = cont * (1.0 - cut)
        else:
            carry = cont
        delta = rewards[t] + gamma * v_next * cont - values[t]
        last = delta + gamma * gae_lambda * carry * last
        adv[t] = last
    return adv, adv + values
