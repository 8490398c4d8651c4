"""Reduced precision, opt-in: the top-level config key ``mixed_precision`` (null, the default, or
``mixed_bfloat16``), or the environment variable ``DPPO_MIXED_PRECISION`` when the config leaves it null.

Under ``mixed_bfloat16`` the networks' hidden layers compute in bfloat16 (variables stay float32); each network's
last layer computes in float32 (:func:`dppo.nets.mlp.output_dtype`), so the denoising means, log-probabilities,
values and losses are float32 as before. It is a Keras global policy: it applies to the networks built after it
is set, so the runners set it (back to float32 when off) before they build anything.

Measured (benchmarks/results.md, "bf16"): see there before turning it on - bfloat16 keeps ~3 significant digits,
and DPPO's ratio clip (1e-3 to 1e-2) is finer than the log-probability error it causes.
"""

from __future__ import annotations

import os
from typing import Any

import keras

POLICIES = ("float32", "mixed_bfloat16")
ENV_VAR = "DPPO_MIXED_PRECISION"


def resolve(value: Any) -> str:
    """The policy name of a config value (null -> the environment variable, else float32)."""
    name = value if value not in (None, "", False) else os.environ.get(ENV_VAR) or "float32"
    name = {"bf16": "mixed_bfloat16", "bfloat16": "mixed_bfloat16", "fp32": "float32", "none": "float32"}.get(
        str(name), str(name))
    if name not in POLICIES:
        raise ValueError(f"mixed_precision must be null or one of {list(POLICIES)} (or {ENV_VAR}), got '{value}'")
    return name


def set_policy(value: Any = None) -> str:
    """Set Keras' global dtype policy from a config value; returns its name."""
    name = resolve(value)
    keras.mixed_precision.set_global_policy(name)
    return name
