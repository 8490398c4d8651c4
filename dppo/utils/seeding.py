"""One seed for Python, NumPy and TensorFlow."""

from __future__ import annotations

import random

import numpy as np
import tensorflow as tf


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    import keras
    keras.utils.set_random_seed(seed)
