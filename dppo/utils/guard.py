"""Divergence guard: stop a run that blows up - not only on NaN - before it writes a checkpoint of the
blown-up state, and say where the bad numbers came from.

Fed once per epoch / iteration (never per step) with the loss and the global norm of the trained weights:

* a non-finite loss or weight norm stops the run at once;
* a finite blow-up stops it too: a loss whose magnitude exceeds ``loss_factor`` (1e3) times the median
  magnitude of the last ``window`` (20) values (the median floored at ``loss_floor`` = 1, so a loss that merely
  wanders near zero never trips it), or a weight norm above ``weight_factor`` (100) times its running median.
  Healthy runs change their weight norm by per cents per iteration and their loss by small factors, so these
  margins leave orders of magnitude to spare; ``min_history`` (3) values are needed before a jump can be judged.
  The thresholds come from ``train.divergence_guard`` (``null`` turns the jump checks off; non-finite values
  always stop the run).

Rollout data is checked too (:func:`check_rollout`): a non-finite observation or reward from the env is named
with its env index and step. Each error is a :class:`DivergenceError` (a ``FloatingPointError``) naming what blew
up, where it came from (data / normalisation, the environment, or the update itself), the likely cause, and the
last good checkpoint, which is kept: the runners check before saving.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf


class DivergenceError(FloatingPointError):
    """A run produced non-finite or exploding numbers; the message names what, where from and the likely cause."""


@dataclass(frozen=True)
class GuardSettings:
    loss_factor: float = 1e3
    weight_factor: float = 1e2
    window: int = 20
    min_history: int = 3
    loss_floor: float = 1.0
    jumps: bool = True  # False: only non-finite values stop the run

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None, present: bool) -> GuardSettings:
        """From ``train.divergence_guard``: absent -> defaults, null -> jump checks off."""
        if present and block is None:
            return cls(jumps=False)
        return cls(**{k: type(getattr(cls, k))(v) for k, v in dict(block or {}).items()})


def weight_norm(variables: Sequence[tf.Variable]) -> float:
    """Global L2 norm of ``variables`` (one small graph-free op per call; called once per epoch/iteration)."""
    return float(tf.linalg.global_norm([tf.convert_to_tensor(v) for v in variables])) if variables else 0.0


class DivergenceGuard:
    """Watches one run's loss and weight norm. ``what`` names the run ("pre-training"), ``unit`` its step
    ("epoch"), ``cause`` the likely cause of a blow-up in the update (e.g. the learning-rate keys to lower), and
    ``last_good`` returns the latest checkpoint (kept)."""

    def __init__(self, what: str, unit: str, cause: str, last_good: Callable[[], Path | None],
                 settings: GuardSettings | None = None):
        self.what, self.unit, self.cause, self.last_good = what, unit, cause, last_good
        self.settings = settings or GuardSettings()
        self.losses: deque[float] = deque(maxlen=self.settings.window)
        self.norms: deque[float] = deque(maxlen=self.settings.window)

    # -------------------------------------------------------------------------------------------------
    def kept(self) -> str:
        path = self.last_good()
        return (f"the last good checkpoint {path} is kept (nothing was saved for this {self.unit})" if path else
                f"no checkpoint had been written yet (nothing was saved for this {self.unit})")

    def fail(self, step: int, what: str, source: str, cause: str) -> None:
        raise DivergenceError(f"{self.what} diverged at {self.unit} {step}: {what}; source: {source}; likely cause: "
                              f"{cause}; {self.kept()}")

    def seed(self, losses: Sequence[float] = (), norms: Sequence[float] = ()) -> None:
        """Start the history from earlier values (a resumed run's logged losses, the initial weight norm)."""
        self.losses.extend(abs(x) for x in losses if math.isfinite(x))
        self.norms.extend(x for x in norms if math.isfinite(x))

    def check_update(self, step: int, loss: float | None = None, norm: float | None = None,
                     source: str = "the update (its inputs were checked finite)") -> None:
        """Raise on a non-finite or exploding loss / weight norm of ``step``, else record them."""
        s = self.settings
        if loss is not None and not math.isfinite(loss):
            self.fail(step, f"the loss is {loss}", source, self.cause)
        if norm is not None and not math.isfinite(norm):
            self.fail(step, f"the weight norm is {norm}", source, self.cause)
        if s.jumps and loss is not None and len(self.losses) >= s.min_history:
            ref = max(float(np.median(self.losses)), s.loss_floor)
            if abs(loss) > s.loss_factor * ref:
                self.fail(step, f"the loss jumped to {loss:.4g}, {abs(loss) / ref:.3g} times the median of the last "
                                f"{len(self.losses)} (threshold {s.loss_factor:g}x)", source, self.cause)
        if s.jumps and norm is not None and len(self.norms) >= 1:
            ref = float(np.median(self.norms))
            if ref > 0 and norm > s.weight_factor * ref:
                self.fail(step, f"the weight norm jumped to {norm:.4g}, {norm / ref:.3g} times its running median "
                                f"{ref:.4g} (threshold {s.weight_factor:g}x)", source, self.cause)
        if loss is not None:
            self.losses.append(abs(loss))
        if norm is not None:
            self.norms.append(norm)

    def check_finite(self, step: int, name: str, value: Any, source: str, cause: str) -> None:
        """Raise when the array ``value`` (named ``name``) has a non-finite entry; names its first index."""
        arr = np.asarray(value)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            first = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
            self.fail(step, f"{name} is {arr[first]} at index {first}", source, cause)

    def check_rollout(self, step: int, ro: Mapping[str, Any], env_name: str, first_step: int = 0) -> None:
        """Non-finite observations or rewards of a rollout (arrays (n_steps, n_envs, ...)), named by env index
        and rollout step (counted from ``first_step``)."""
        cause = (f"the environment '{env_name}' (or a wrapper) produced it - check its state, the actions it was "
                 f"given and the normalisation file (a constant dimension scales deviations by 2e6)")
        arrays = [(f"observation '{k}'", v) for k, v in ro["obs"].items()] + [("reward", ro["rewards"])]
        arrays += [(f"last observation '{k}'", v[None]) for k, v in ro["last_obs"].items()]
        for name, value in arrays:
            arr = np.asarray(value)
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
                t, e = index[:2]
                where = "after the last step" if name.startswith("last") else f"at rollout step {first_step + t}"
                self.fail(step, f"the env's {name.replace('last ', '')} is {arr[index]} in env {e} {where}",
                          f"the environment (env.name={env_name})", cause)


class RolloutError(RuntimeError):
    """The environment (or the policy acting in it) raised during a rollout; names the iteration and env."""
