"""Cosine annealing with linear warm-up and restarts (the reference's CosineAnnealingWarmupRestarts),
stepped explicitly (per epoch/iteration)."""

from __future__ import annotations

import math


class CosineAnnealingWarmupRestarts:
    """lr(s) = lo + (hi - lo) s / W for s < W, else lo + (hi - lo)(1 + cos(pi (s - W)/(C - W)))/2,
    with s = steps taken mod C. Before the first step lr = lo (min_lr) whatever W is, like the reference, whose
    constructor sets min_lr after its own initial step: with W = 0 the first epoch/iteration runs at min_lr, not at
    the maximum the formula gives for s = 0; restarts (s = 0 again) do follow the formula."""

    def __init__(self, max_lr: float, first_cycle_steps: int, warmup_steps: int = 0, min_lr: float = 0.0,
                 cycle_mult: float = 1.0, gamma: float = 1.0):
        if cycle_mult != 1.0 or gamma != 1.0:
            raise ValueError("only cycle_mult=1 and gamma=1 are supported (all reference configs use these)")
        if warmup_steps >= first_cycle_steps and first_cycle_steps > 1:
            raise ValueError(f"warmup_steps ({warmup_steps}) must be < first_cycle_steps ({first_cycle_steps})")
        self.max_lr, self.min_lr = float(max_lr), float(min_lr)
        self.cycle, self.warmup = int(first_cycle_steps), int(warmup_steps)
        self.steps = 0

    def lr_at(self, steps: int) -> float:
        s = steps % self.cycle
        lo, hi = self.min_lr, self.max_lr
        if steps == 0:
            return lo
        if s < self.warmup:
            return lo + (hi - lo) * s / self.warmup
        return lo + (hi - lo) * (1 + math.cos(math.pi * (s - self.warmup) / max(self.cycle - self.warmup, 1))) / 2

    @property
    def lr(self) -> float:
        return self.lr_at(self.steps)

    def step(self) -> float:
        self.steps += 1
        return self.lr


def make_scheduler(lr: float, cfg: dict | None) -> CosineAnnealingWarmupRestarts:
    """Build from a config block with first_cycle_steps, warmup_steps, min_lr (constant lr when absent)."""
    cfg = dict(cfg or {})
    return CosineAnnealingWarmupRestarts(lr, cfg.get("first_cycle_steps", 1), cfg.get("warmup_steps", 0),
                                         cfg.get("min_lr", lr))
