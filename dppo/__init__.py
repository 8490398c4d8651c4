"""dppo-tf: Diffusion Policy Policy Optimization in TensorFlow 2."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``dppo.load_policy`` is imported on first use, so ``import dppo`` stays cheap (no TensorFlow)."""
    if name == "load_policy":
        from dppo.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'dppo' has no attribute '{name}'")
