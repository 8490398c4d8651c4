"""Export a trained policy as a TensorFlow SavedModel (and, where TensorFlow can convert it, a TFLite file):
raw observation in, raw action chunk out, with the normalisation and the whole denoising loop inside.

    dppo export <policy file | run dir | state_N.npz> [--out <dir>] [--no-tflite]

The source is anything ``dppo.load_policy`` reads (a run's ``policy.npz``, a run directory, or an old-style
checkpoint with its run's ``config.yaml``). Signatures (pixel policies take ``rgb`` (B, T_img, C, H, W) too):

- ``serving_default(observation)``: observation (B, cond_steps, obs_dim) -> ``action`` (B, horizon_steps,
  action_dim), sampled deterministically from the model's own noise stream;
- ``seeded(observation, seed)``: the same with the noise stream restarted at ``seed`` (int64): it returns what
  ``Policy.act(obs, seed=seed)`` returns in-process.

The TFLite file is ``<out>/policy.tflite`` with the ``seeded`` signature (the converter keeps one signature of
this model); it uses TensorFlow ops where the builtins do not suffice, so running it needs an interpreter with the
Flex delegate. If the conversion fails, one line says so and the SavedModel stands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tensorflow as tf

from dppo.policy import Policy, RawPolicy, load_policy


class ExportedPolicy(tf.Module):
    """The serving functions of a :class:`RawPolicy` (see the module docstring)."""

    def __init__(self, raw: RawPolicy):
        super().__init__()
        self.raw = raw
        model = raw.model
        obs = tf.TensorSpec((None, model.cond_steps, model.obs_dim), tf.float32, name="observation")
        seed = tf.TensorSpec((), tf.int64, name="seed")
        if raw.pixels:
            rgb = tf.TensorSpec((None, *model.network.rgb_shape), tf.float32, name="rgb")
            self.serve = tf.function(lambda observation, rgb: {"action": raw.act(observation, rgb)},
                                     input_signature=[obs, rgb])
            self.seeded = tf.function(lambda observation, rgb, seed: {"action": raw.act(observation, rgb, seed)},
                                      input_signature=[obs, rgb, seed])
        else:
            self.serve = tf.function(lambda observation: {"action": raw.act(observation)}, input_signature=[obs])
            self.seeded = tf.function(lambda observation, seed: {"action": raw.act(observation, seed=seed)},
                                      input_signature=[obs, seed])


def export_saved_model(policy: Policy, out: str | Path) -> Path:
    module = ExportedPolicy(policy.raw)
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve, "seeded": module.seeded})
    return Path(out)


def export_tflite(saved_model: str | Path) -> tuple[Path | None, str]:
    """Convert a SavedModel to ``<saved_model>/policy.tflite``: (path or None, one line saying what happened)."""
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), ["seeded"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        blob = converter.convert()
    except Exception as e:  # the converter raises many kinds; any of them means "no TFLite file"
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return None, f"TFLite: not written, the converter failed ({type(e).__name__}: {first}); the SavedModel stands"
    path = Path(saved_model) / "policy.tflite"
    path.write_bytes(blob)
    return path, f"TFLite: {path} ({len(blob) / 1e3:.0f} kB, signature seeded: observation, seed -> action)"


def default_out(source: Path) -> Path:
    run = source if source.is_dir() else source.parent.parent if source.parent.name == "checkpoint" else source.parent
    return run / "saved_model"


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="dppo export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="policy file, run directory or checkpoint state_N.npz")
    p.add_argument("--checkpoint", default=None, help="an old-style run's checkpoint (default: its latest)")
    p.add_argument("--out", default=None, help="default: <run dir>/saved_model")
    p.add_argument("--no-tflite", action="store_true", help="write the SavedModel only")
    args = p.parse_args(argv)
    source = Path(args.checkpoint or args.source)
    if not source.exists():
        raise SystemExit(f"{source} not found: pass a policy file, a run directory or a checkpoint")
    policy = load_policy(source)
    out = export_saved_model(policy, args.out or default_out(Path(args.source)))
    print(f"exported {policy.source} -> {out} (signatures serving_default: observation -> action, seeded: "
          f"observation, seed -> action; raw units)")
    if not args.no_tflite:
        print(export_tflite(out)[1])
