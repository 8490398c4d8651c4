"""Seeds: one integer per run, one independent random stream per purpose.

``tf.random.Generator.from_seed(s)`` places ``s`` in Philox's *counter*, so seed s + 1 replays seed s's stream
shifted by one block: two "seeds" would be near-copies. Here a run seed and a purpose name are hashed by NumPy's
``SeedSequence`` into a 64-bit Philox *key* (counter 0), so streams of different seeds or purposes are
statistically independent, and the same (seed, purpose) reproduces exactly.

Purposes used by the project: ``sampling`` (action noise in rollouts), ``training`` (pre-training noise and
timesteps, SAC's reparameterisation noise, Hutchinson probes), ``shuffle`` (minibatch order), ``augment``
(image shifts), ``exploration`` (random warm-up actions), ``entropy`` (DPOER's entropy-estimator draws: its
state subsets and action samples, kept off the sampling stream so that rollouts see DPPO's noise).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

# model attributes that hold a tf.random.Generator; checkpoints save and restore each under "rng/<attr>"
GENERATOR_ATTRS = ("rng", "train_rng", "shuffle_rng", "augment_rng", "entropy_rng")


def _entropy(seed: int, purpose: str) -> list[int]:
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return [seed, zlib.crc32(purpose.encode())]


def philox_key(seed: int, purpose: str) -> int:
    """The 64-bit Philox key of (seed, purpose), as the signed integer TensorFlow stores it."""
    return int(np.random.SeedSequence(_entropy(seed, purpose)).generate_state(1, np.uint64).view(np.int64)[0])


def tf_stream(seed: int, purpose: str) -> tf.random.Generator:
    """A Philox generator whose key is derived from (seed, purpose); its counter starts at 0."""
    return tf.random.Generator.from_key_counter(key=philox_key(seed, purpose), counter=[0, 0], alg="philox")


def np_stream(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy generator for (seed, purpose), independent of every ``tf_stream``."""
    return np.random.default_rng(np.random.SeedSequence(_entropy(seed, "numpy/" + purpose)))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and TensorFlow's global generators (layer initialisers draw from these)."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    import keras
    keras.utils.set_random_seed(seed)


def generator_states(model: Any) -> dict[str, np.ndarray]:
    """``{"rng/<attr>": state}`` of every generator the model holds (see ``GENERATOR_ATTRS``)."""
    return {f"rng/{a}": getattr(model, a).state.numpy() for a in GENERATOR_ATTRS
            if isinstance(getattr(model, a, None), tf.random.Generator)}


def restore_generators(model: Any, get: Callable[[str], Any]) -> None:
    """Reset the model's generators from ``get("rng/<attr>")``; a missing or malformed state raises
    :class:`~dppo.utils.checkpoint.CheckpointError`."""
    from dppo.utils.checkpoint import CheckpointError

    for key in generator_states(model):
        state = get(key)
        if state is None:
            raise CheckpointError(f"the checkpoint has no '{key}' random state (it was written before the run's "
                                  "random streams were made independent); resume it with the version that wrote it")
        generator = getattr(model, key.split("/", 1)[1])
        state = np.asarray(state)
        if state.dtype.kind not in "iu" or state.shape != tuple(generator.state.shape):
            raise CheckpointError(f"the checkpoint's '{key}' random state is {state.dtype} {state.shape}, expected "
                                  f"integers of shape {tuple(generator.state.shape)}")
        generator.reset(state.astype(generator.state.dtype.as_numpy_dtype))
