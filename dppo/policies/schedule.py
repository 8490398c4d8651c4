"""Cosine noise schedule and every buffer derived from it, plus the DDIM grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine_beta_schedule(denoising_steps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal betas in float64, clipped to [0, 0.999]."""
    u = np.linspace(0, denoising_steps, denoising_steps + 1, dtype=np.float64) / denoising_steps
    f = np.cos((u + s) / (1 + s) * np.pi * 0.5) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return np.clip(betas, 0, 0.999)


def ddim_timesteps(denoising_steps: int, ddim_steps: int) -> np.ndarray:
    """Leading uniform grid, noisiest first: K=100, 5 steps -> [80, 60, 40, 20, 0]."""
    ratio = denoising_steps // ddim_steps
    return (np.arange(ddim_steps) * ratio)[::-1].copy()


@dataclass(frozen=True)
class DiffusionSchedule:
    """Float32 buffers of the DDPM posterior and, when ``ddim_steps`` is set, of the DDIM grid."""

    denoising_steps: int
    ddim_steps: int | None = None

    def __post_init__(self):
        k = self.denoising_steps
        betas = cosine_beta_schedule(k)
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.concatenate([[1.0], ac[:-1]])
        var = betas * (1 - ac_prev) / (1 - ac)
        buffers = {
            "betas": betas, "alphas": alphas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1 / ac), "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / ac - 1),
            "posterior_variance": var,
            "posterior_log_variance_clipped": np.log(np.maximum(var, 1e-20)),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1 - ac),
            "posterior_mean_coef2": (1 - ac_prev) * np.sqrt(alphas) / (1 - ac),
        }
        buffers["posterior_std"] = np.exp(0.5 * buffers["posterior_log_variance_clipped"])
        if self.ddim_steps:
            tau = ddim_timesteps(k, self.ddim_steps)
            a = ac[tau]
            a_prev = np.concatenate([a[1:], [1.0]])
            buffers.update({
                "ddim_t": tau, "ddim_alphas": a, "ddim_alphas_prev": a_prev,
                "ddim_sqrt_one_minus_alphas": np.sqrt(1 - a),
                # sigma for eta = 1; scale by eta for other values
                "ddim_sigmas_eta1": np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev)),
            })
        for name, value in buffers.items():
            dtype = np.int32 if name == "ddim_t" else np.float32
            object.__setattr__(self, name, np.asarray(value, dtype=dtype))

    @property
    def n_sampling_steps(self) -> int:
        """Steps of the reverse chain: K for DDPM, K_ddim for DDIM."""
        return self.ddim_steps or self.denoising_steps
