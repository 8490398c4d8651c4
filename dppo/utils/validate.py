"""Checking a run's config before any work starts: one declarative schema per runner, cross-key consistency,
and the checks a resumed run or a loaded base policy must pass against the checkpoint's recorded values.

A schema maps each known key of a block to a short spec string:

    "int>0"  "int>=0"  "float>0"  "float[0,1]"  "float(0,1]"  "number"  "bool"  "str"  "list"  "dict"  "any"

with ``?`` after the type when null is allowed (``"float?>0"``). A nested ``dict`` of specs is a sub-block (null or
absent is allowed); an "open" block (``OPEN`` key present) accepts keys it does not list, because what reads it
checks them itself (model and network blocks: their constructors refuse unknown keyword arguments). Every
problem is reported as ``<dotted key>: <what was expected>, got <value>`` in one :class:`ConfigError`.

Keys that the PyTorch reference's configs carry but dppo-tf does not use are accepted and ignored; they are
listed once, in ``COMPAT_KEYS``.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

OPEN = "*"  # marks a block whose unlisted keys are checked by whatever consumes it


class ConfigError(ValueError):
    """A config value that is unknown, of the wrong type, out of range or inconsistent with another key or with
    the checkpoint being resumed; the message names the key."""


# keys of the reference's configs that dppo-tf accepts and ignores, per block ("" = top level)
COMPAT_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"device", "mode", "plotter"}),
    "train": frozenset({"plotter", "plot_freq", "save_trajs", "furniture_sparse_reward", "reset_at_iteration",
                        "best_reward_threshold_for_success", "use_bc_loss", "bc_loss_coeff", "render"}),
    "env": frozenset({"use_image_obs", "render"}),
    "train_dataset": frozenset({"device"}),
    "model": frozenset({"device"}),
}

# ---------------------------------------------------------------------------------------------- schemas
LR_SCHEDULER = {"first_cycle_steps": "int>0", "warmup_steps": "int>=0", "min_lr": "float>=0", "max_lr": "float?>=0",
                "cycle_mult": "float>0", "gamma": "float>0"}
DIVERGENCE_GUARD = {"loss_factor": "float>1", "weight_factor": "float>1", "window": "int>0",
                    "min_history": "int>0", "loss_floor": "float>0"}
WANDB = {"entity": "str?", "project": "str?", "run": "str?"}
NETWORK = {OPEN: "any", "cond_dim": "int>0", "horizon_steps": "int>0", "action_dim": "int>0", "mlp_dims": "list",
           "activation_type": "str", "_target_": "str"}
MODEL = {OPEN: "any", "_target_": "str", "horizon_steps": "int>0", "obs_dim": "int>0", "action_dim": "int>0",
         "cond_steps": "int>0", "denoising_steps": "int>0", "ft_denoising_steps": "int>0", "ddim_steps": "int?>0",
         "use_ddim": "bool", "network_path": "str?", "randn_clip_value": "float>0", "network": NETWORK,
         "actor": NETWORK, "critic": NETWORK}
ENV = {"n_envs": "int>0", "name": "str", "max_episode_steps": "int>0", "reset_at_iteration": "bool",
       "save_video": "bool", "best_reward_threshold_for_success": "number", "save_full_observations": "bool",
       "wrappers": "dict?", "specific": "dict?", "vector": "str", "batched": "bool", "backend": "str",
       "overlap": "bool", "n_workers": "int?>0"}

TOP = {"_target_": "str", "name": "str?", "logdir": "str", "seed": "int>=0", "resume": "bool", "hydra": "any",
       "wandb": WANDB, "env_name": "str?", "obs_dim": "int>0", "action_dim": "int>0", "cond_steps": "int>0",
       "img_cond_steps": "int>0", "horizon_steps": "int>0", "act_steps": "int>0", "denoising_steps": "int>0",
       "ft_denoising_steps": "int>=0", "use_ddim": "bool", "num_modes": "int>0", "shape_meta": "any",
       "image_size": "any", "normalization_path": "str?", "base_policy_path": "str?", "train_dataset_path": "str?",
       "mixed_precision": "str?"}

PRETRAIN = {
    **TOP, "env": "any",  # the reference names the task here (used in W&B names only)
    "train": {"n_epochs": "int>0", "batch_size": "int>0", "learning_rate": "float>=0", "weight_decay": "float>=0",
              "lr_scheduler": LR_SCHEDULER, "epoch_start_ema": "int>=0", "update_ema_freq": "int>0",
              "save_model_freq": "int>0", "max_grad_norm": "float?>0", "divergence_guard": DIVERGENCE_GUARD,
              "distribute": "any"},
    "ema": {"decay": "float[0,1]"},
    "model": MODEL,
    "train_dataset": {"_target_": "str", "dataset_path": "str", "horizon_steps": "int>0", "cond_steps": "int>0",
                      "img_cond_steps": "int>0", "max_n_episodes": "int>0", "use_img": "bool", "obs_dim": "int?>0",
                      "action_dim": "int?>0"},
}

PPO = {
    **TOP, "env": ENV, "model": MODEL, "reward_horizon": "int>0",
    "train": {
        "n_train_itr": "int>0", "n_critic_warmup_itr": "int>=0", "n_steps": "int>0", "gamma": "float[0,1]",
        "actor_lr": "float>=0", "actor_weight_decay": "float>=0", "actor_lr_scheduler": LR_SCHEDULER,
        "critic_lr": "float>=0", "critic_weight_decay": "float>=0", "critic_lr_scheduler": LR_SCHEDULER,
        "save_model_freq": "int>0", "val_freq": "int>0", "force_train": "bool", "log_freq": "int>0",
        "render": {"freq": "int?>=0", "num": "int?>=0"}, "reward_scale_running": "bool",
        "reward_scale_const": "float", "gae_lambda": "float[0,1]", "batch_size": "int>0", "update_epochs": "int>0",
        "vf_coef": "float>=0", "ent_coef": "float", "target_kl": "float?>0", "logprob_batch_size": "int>0",
        "max_grad_norm": "float?>0", "bootstrap_truncated": "bool", "grad_accumulate": "int>0", "augment": "bool",
        "micro_batch": "int?>=0", "n_eval_episode": "int>=0", "divergence_guard": DIVERGENCE_GUARD,
        "distribute": "any"},
}

SAC_NET = {"_target_": "str", "mlp_dims": "list", "activation_type": "str", "cond_dim": "int>0",
           "horizon_steps": "int>0", "action_dim": "int>0"}
SAC = {
    **TOP, "env": ENV,
    "train": {
        "n_train_itr": "int>0", "n_steps": "int>0", "gamma": "float[0,1]", "actor_lr": "float>=0",
        "critic_lr": "float>=0", "save_model_freq": "int>0", "val_freq": "int>0", "log_freq": "int>0",
        "batch_size": "int>0", "target_ema_rate": "float[0,1]", "scale_reward_factor": "float",
        "critic_replay_ratio": "float>0", "actor_replay_ratio": "float>0", "buffer_size": "int>0",
        "n_eval_episode": "int>=0", "n_explore_steps": "int>=0", "target_entropy": "float?",
        "init_temperature": "float>0", "actor_steps": "int>0", "divergence_guard": DIVERGENCE_GUARD},
    # built by TrainSACAgent itself, so every key is listed (_target_ entries are accepted and ignored)
    "model": {"_target_": "str", "randn_clip_value": "float>0", "tanh_output": "bool", "horizon_steps": "int>0",
              "actor": {**SAC_NET, "tanh_output": "bool", "std_max": "float>0", "std_min": "float>0"},
              "critic": {**SAC_NET, "use_layernorm": "bool", "double_q": "bool", "action_steps": "int>0"}},
}

# the replay-based diffusion baselines (DIPO, DQL, QSM, IDQL): shared keys, then the methods' own (the runner
# passes each method key to the model class, and refuses one the class does not take)
REPLAY = {
    **TOP, "env": ENV, "model": MODEL,
    "train": {
        "n_train_itr": "int>0", "n_critic_warmup_itr": "int>=0", "n_steps": "int>0", "gamma": "float[0,1]",
        "actor_lr": "float>=0", "actor_weight_decay": "float>=0", "actor_lr_scheduler": LR_SCHEDULER,
        "critic_lr": "float>=0", "critic_weight_decay": "float>=0", "critic_lr_scheduler": LR_SCHEDULER,
        "save_model_freq": "int>0", "val_freq": "int>0", "force_train": "bool", "log_freq": "int>0",
        "render": {"freq": "int?>=0", "num": "int?>=0"}, "max_grad_norm": "float?>0",
        "divergence_guard": DIVERGENCE_GUARD, "scale_reward_factor": "float", "buffer_size": "int>0",
        "batch_size": "int>0", "replay_ratio": "float>0",
        "target_ema_rate": "float[0,1]", "critic_tau": "float[0,1]", "action_lr": "float>0",
        "action_gradient_steps": "int>0", "eta": "float>=0", "q_grad_coeff": "float", "eval_deterministic": "bool",
        "eval_sample_num": "int>0", "use_expectile_exploration": "bool"},
}

EVAL = {**TOP, "env": ENV, "model": MODEL, "n_steps": "int>0", "render_num": "int>=0", "deterministic": "bool"}

# DRWR and DAWR (dppo/runners/weighted_regression.py): one schema, the reference's keys of both methods (each
# learner reads its own: RWR lr / weight_decay / lr_scheduler / max_reward_weight / update_epochs; AWR actor_* /
# critic_* / max_adv_weight / buffer_size / replay_ratio / critic_update_ratio / scale_reward_factor)
WEIGHTED = {
    **TOP, "env": ENV, "model": MODEL,
    "train": {
        "n_train_itr": "int>0", "n_critic_warmup_itr": "int>=0", "n_steps": "int>0", "gamma": "float[0,1]",
        "lr": "float>=0", "weight_decay": "float>=0", "lr_scheduler": LR_SCHEDULER,
        "actor_lr": "float>=0", "actor_weight_decay": "float>=0", "actor_lr_scheduler": LR_SCHEDULER,
        "critic_lr": "float>=0", "critic_weight_decay": "float>=0", "critic_lr_scheduler": LR_SCHEDULER,
        "save_model_freq": "int>0", "val_freq": "int>0", "force_train": "bool", "log_freq": "int>0",
        "render": {"freq": "int?>=0", "num": "int?>=0"}, "batch_size": "int>0", "update_epochs": "int>0",
        "beta": "float>=0", "max_reward_weight": "float>0", "max_adv_weight": "float>0",
        "scale_reward_factor": "float", "buffer_size": "int>0", "replay_ratio": "float>0",
        "critic_update_ratio": "int>0", "logprob_batch_size": "int>0", "max_grad_norm": "float?>0",
        "divergence_guard": DIVERGENCE_GUARD},
}

SCHEMAS: dict[str, dict[str, Any]] = {"pretrain": PRETRAIN, "ppo": PPO, "sac": SAC, "replay": REPLAY,
                                      "weighted": WEIGHTED, "eval": EVAL}

# config keys that must not change when a run is resumed: its checkpoints were written for them
RESUME_KEYS: dict[str, tuple[str, ...]] = {
    "pretrain": ("obs_dim", "action_dim", "horizon_steps", "cond_steps", "img_cond_steps", "denoising_steps",
                 "model._target_", "model.network", "model.denoising_steps", "model.horizon_steps",
                 "train_dataset.horizon_steps", "train_dataset.cond_steps", "train_dataset.img_cond_steps",
                 "train_dataset.use_img"),
    "ppo": ("obs_dim", "action_dim", "horizon_steps", "cond_steps", "act_steps", "denoising_steps",
            "ft_denoising_steps", "model._target_", "model.actor", "model.critic", "model.denoising_steps",
            "model.ft_denoising_steps", "model.horizon_steps", "model.use_ddim", "model.ddim_steps", "env.n_envs",
            "train.reward_scale_running", "train.augment"),
    "sac": ("obs_dim", "action_dim", "horizon_steps", "cond_steps", "act_steps", "model.actor", "model.critic"),
    "replay": ("obs_dim", "action_dim", "horizon_steps", "cond_steps", "act_steps", "denoising_steps",
               "model._target_", "model.actor", "model.critic", "model.critic_q", "model.critic_v",
               "model.denoising_steps", "model.horizon_steps", "env.n_envs", "train.buffer_size"),
    "weighted": ("obs_dim", "action_dim", "horizon_steps", "cond_steps", "act_steps", "denoising_steps",
                 "model._target_", "model.network", "model.actor", "model.critic", "model.denoising_steps",
                 "model.horizon_steps", "env.n_envs", "train.buffer_size"),
}

# what a checkpoint records about itself (meta/<key>), compared with the config that loads it
RECORDED_DIMS = ("obs_dim", "action_dim", "horizon_steps", "cond_steps", "denoising_steps", "ft_denoising_steps")


# ---------------------------------------------------------------------------------------------- spec strings
_SPEC = re.compile(r"^(int|float|number|bool|str|list|dict|any)(\?)?(.*)$")
_TYPE_WORDS = {"int": "an integer", "float": "a number", "number": "a number", "bool": "true or false",
               "str": "a string", "list": "a list", "dict": "a mapping", "any": "a value"}


def _parse_range(text: str) -> Callable[[float], bool] | None:
    text = text.strip()
    if not text:
        return None
    if m := re.fullmatch(r"(>=|>|<=|<)\s*(-?[\d.e+-]+)", text):
        op, bound = m.group(1), float(m.group(2))
        return {">=": lambda x: x >= bound, ">": lambda x: x > bound, "<=": lambda x: x <= bound,
                "<": lambda x: x < bound}[op]
    if m := re.fullmatch(r"([\[(])\s*(-?[\d.e+-]+)\s*,\s*(-?[\d.e+-]+)\s*([\])])", text):
        lo, hi = float(m.group(2)), float(m.group(3))
        lo_ok = (lambda x: x >= lo) if m.group(1) == "[" else (lambda x: x > lo)
        hi_ok = (lambda x: x <= hi) if m.group(4) == "]" else (lambda x: x < hi)
        return lambda x: lo_ok(x) and hi_ok(x)
    raise ValueError(f"bad range in schema spec: {text!r}")


def _describe(kind: str, rng: str) -> str:
    rng = rng.strip()
    if not rng:
        return _TYPE_WORDS[kind]
    if rng[0] in "[(":
        return f"{_TYPE_WORDS[kind]} in {rng}"
    m = re.fullmatch(r"(>=|>|<=|<)\s*(.+)", rng)
    return f"{_TYPE_WORDS[kind]} {m.group(1)} {m.group(2)}"


def _number(value: Any, integer: bool) -> float | int | None:
    """``value`` as a number if it is one (numeric strings such as "1e-4" included), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
    elif isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if integer:
        return int(value) if math.isfinite(value) and value == int(value) else None
    return value


def check_value(key: str, value: Any, spec: str) -> str | None:
    """The problem with ``value`` under ``spec``, as one line naming ``key``, or None."""
    m = _SPEC.match(spec)
    if m is None:
        raise ValueError(f"bad schema spec {spec!r} for {key}")
    kind, nullable, rng = m.group(1), bool(m.group(2)), m.group(3)
    expected = _describe(kind, rng)
    if value is None:
        return None if nullable or kind == "any" else f"{key}: expected {expected}, got null"
    if kind == "any":
        return None
    if kind in ("int", "float", "number"):
        number = _number(value, integer=kind == "int")
        if number is None or (kind != "int" and not math.isfinite(number)):
            return f"{key}: expected {expected}, got {value!r}"
        check = _parse_range(rng)
        if check is not None and not check(number):
            return f"{key}: expected {expected}, got {value!r}"
        return None
    ok = {"bool": lambda v: isinstance(v, (bool, np.bool_)), "str": lambda v: isinstance(v, str),
          "list": lambda v: isinstance(v, (list, tuple, ListConfig)),
          "dict": lambda v: isinstance(v, (dict, DictConfig))}[kind]
    return None if ok(value) else f"{key}: expected {expected}, got {value!r}"


# ---------------------------------------------------------------------------------------------- walking
def _all_keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, spec in schema.items():
        if key == OPEN:
            continue
        out.append(prefix + key)
        if isinstance(spec, Mapping):
            out += _all_keys(spec, f"{prefix}{key}.")
    return out


def _hint(key: str, where: str, schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    known = [k for k in schema if k != OPEN]
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f" (did you mean '{where}{close[0]}'?)"
    elsewhere = [k for k in _all_keys(root) if k.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return f" (it belongs at '{elsewhere[0]}')"
    close = difflib.get_close_matches(key, [k.rsplit(".", 1)[-1] for k in _all_keys(root)], n=1)
    if close:
        full = next(k for k in _all_keys(root) if k.rsplit(".", 1)[-1] == close[0])
        return f" (did you mean '{full}'?)"
    return ""


def check_block(block: Any, schema: Mapping[str, Any], where: str = "", root: Mapping[str, Any] | None = None,
                compat_block: str | None = "") -> list[str]:
    """Problems of ``block`` under ``schema`` (recursively), one line each; ``where`` is the dotted prefix."""
    root = schema if root is None else root
    problems: list[str] = []
    if block is None:
        return problems
    if not isinstance(block, dict):
        return [f"{where.rstrip('.') or 'config'}: expected a mapping, got {block!r}"]
    compat = COMPAT_KEYS.get(compat_block, frozenset()) if compat_block is not None else frozenset()
    for key, value in block.items():
        spec = schema.get(key)
        if spec is None:
            if key in compat or OPEN in schema:
                continue
            problems.append(f"{where}{key}: unknown key{_hint(key, where, schema, root)}")
        elif isinstance(spec, Mapping):
            sub = f"{where}{key}"
            problems += check_block(value, spec, sub + ".", root, sub if sub in COMPAT_KEYS else None)
        else:
            problem = check_value(where + key, value, spec)
            if problem:
                problems.append(problem)
    return problems


def get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg``'s value at a dotted key, or ``default`` when any part is missing."""
    node = cfg
    for part in dotted.split("."):
        if isinstance(node, (dict, DictConfig)) and part in node:
            node = node[part]
        else:
            return default
    return node


def as_plain(cfg: Any) -> dict:
    """The config as plain containers with interpolations resolved; an unresolvable or missing value is a
    :class:`ConfigError`."""
    if not isinstance(cfg, (DictConfig, ListConfig)):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as e:  # omegaconf's interpolation / missing-value errors
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{key + ': ' if key else ''}{str(e).splitlines()[0]}") from e


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------- consistency
def consistency_problems(cfg: Any, kind: str) -> list[str]:
    """Keys that contradict each other (each would otherwise surface later as a shape error)."""
    out: list[str] = []

    def num(key: str) -> Any:
        v = get(cfg, key)
        return _number(v, True) if v is not None else None

    for block in ("model", "train_dataset", "model.network", "model.actor"):
        for key in ("obs_dim", "action_dim", "horizon_steps", "cond_steps", "img_cond_steps", "denoising_steps",
                    "ft_denoising_steps"):
            top, inner = num(key), num(f"{block}.{key}")
            if top is not None and inner is not None and top != inner:
                out.append(f"{block}.{key} is {inner} but {key} is {top}; they must agree")
    obs_dim, cond_steps = num("obs_dim"), num("cond_steps")
    if obs_dim is not None and cond_steps is not None and not get(cfg, "shape_meta"):
        for block in ("model.network", "model.actor", "model.critic"):
            cond_dim = num(f"{block}.cond_dim")
            if cond_dim is not None and "backbone" not in (get(cfg, block) or {}) and cond_dim != obs_dim * cond_steps:
                out.append(f"{block}.cond_dim is {cond_dim} but obs_dim x cond_steps is {obs_dim} x {cond_steps} = "
                           f"{obs_dim * cond_steps}")
    horizon, act = num("horizon_steps"), num("act_steps")
    if horizon is not None and act is not None and act > horizon:
        out.append(f"act_steps ({act}) must be <= horizon_steps ({horizon})")
    if kind == "sac" and horizon is not None and act is not None and act != horizon:
        out.append(f"SAC needs horizon_steps == act_steps (got {horizon} and {act})")
    if kind == "replay" and horizon is not None and act is not None and act != horizon:
        out.append(f"the replay-based baselines need horizon_steps == act_steps (their critics score the executed "
                   f"chunk and the actor is trained on it; got {horizon} and {act})")
    img, cond = num("img_cond_steps"), num("cond_steps")
    if img is not None and cond is not None and img > cond:
        out.append(f"img_cond_steps ({img}) must be <= cond_steps ({cond})")
    k = num("model.denoising_steps") or num("denoising_steps")
    k_ft = num("model.ft_denoising_steps")
    if k_ft is None and kind == "ppo":
        k_ft = num("ft_denoising_steps")
    if k is not None and k_ft is not None:
        if get(cfg, "model.use_ddim") and num("model.ddim_steps") is not None:
            if k_ft > num("model.ddim_steps"):
                out.append(f"model.ft_denoising_steps ({k_ft}) must be <= model.ddim_steps ({num('model.ddim_steps')})")
        elif k_ft > k:
            out.append(f"model.ft_denoising_steps ({k_ft}) must be <= model.denoising_steps ({k})")
    multi = get(cfg, "env.wrappers.multi_step")
    if isinstance(multi, (dict, DictConfig)):
        for key, top in (("n_obs_steps", "cond_steps"), ("n_action_steps", "act_steps")):
            a, b = num(f"env.wrappers.multi_step.{key}"), num(top)
            if a is not None and b is not None and a != b:
                out.append(f"env.wrappers.multi_step.{key} is {a} but {top} is {b}; they must agree")
    for block in ("train.lr_scheduler", "train.actor_lr_scheduler", "train.critic_lr_scheduler"):
        cycle, warm = num(f"{block}.first_cycle_steps"), num(f"{block}.warmup_steps")
        if cycle is not None and warm is not None and cycle > 1 and warm >= cycle:
            out.append(f"{block}.warmup_steps ({warm}) must be < {block}.first_cycle_steps ({cycle})")
    return out


def validate_config(cfg: Any, kind: str) -> None:
    """Check ``cfg`` for the runner ``kind`` ("pretrain", "ppo", "sac", "replay", "weighted", "eval"): unknown
    keys, types, ranges and consistency. Raises one :class:`ConfigError` listing every problem; returns None
    when the config is sound."""
    schema = SCHEMAS[kind]
    plain = as_plain(cfg)
    problems = check_block(plain, schema, "", schema, "")
    if not problems:  # consistency only makes sense once the values have the right types
        problems = consistency_problems(plain, kind)
    if problems:
        raise ConfigError("; ".join(problems))


# ---------------------------------------------------------------------------------------------- propagation
def inherited(cfg: Any, block: str, keys: Sequence[str], accepts: Callable[[str], bool] | None = None) -> dict:
    """Top-level values of ``keys`` that ``block`` does not set itself, to pass when instantiating it (so that
    e.g. changing the top-level ``cond_steps`` reaches the model, as it reaches the networks by interpolation)."""
    node = get(cfg, block) or {}
    return {k: _plain(get(cfg, k)) for k in keys
            if k not in node and get(cfg, k) is not None and (accepts is None or accepts(k))}


def target_accepts(target: str) -> Callable[[str], bool]:
    """Whether the class ``target`` (a dotted path) takes a keyword argument of a given name, following
    ``**kwargs`` up its base classes."""
    import hydra

    return accepted_kwargs(hydra.utils.get_class(target)).__contains__


def accepted_kwargs(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up its base classes."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


# ---------------------------------------------------------------------------------------------- checkpoints
def run_record(cfg: Any, kind: str, model: Any = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a checkpoint records about the run that wrote it (``meta/<key>``): the dims and denoising step
    counts of ``model`` (or of the config), ``n_envs``, and as JSON the values of every key in
    ``RESUME_KEYS[kind]`` plus ``extra`` facts such as data shapes (all checked on resume)."""
    record: dict[str, Any] = {}
    for key in RECORDED_DIMS:
        if key == "ft_denoising_steps" and kind != "ppo":
            continue
        # the model's own values when there is one (a Gaussian policy has no denoising steps to record)
        value = getattr(model, key, None) if model is not None else get(cfg, f"model.{key}", get(cfg, key))
        if _number(value, True) is not None:
            record[key] = int(_number(value, True))
    if get(cfg, "env.n_envs") is not None:
        record["n_envs"] = int(get(cfg, "env.n_envs"))
    fixed = {key: _plain(get(cfg, key)) for key in RESUME_KEYS.get(kind, ())}
    record["run_config"] = json.dumps({**fixed, **{f"data.{k}": _plain(v) for k, v in (extra or {}).items()}},
                                      sort_keys=True, default=str)
    return record


def first_difference(old: Any, new: Any, key: str) -> tuple[str, Any, Any] | None:
    """The first dotted key where two plain values differ (numbers compared by value)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            diff = first_difference(old.get(k), new.get(k), f"{key}.{k}")
            if diff:
                return diff
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if first_difference(a, b, f"{key}[{i}]"):
                return key, old, new
        return None
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return None if float(old) == float(new) else (key, old, new)
    return None if old == new else (key, old, new)


def check_resume(cfg: Any, kind: str, state: Mapping[str, np.ndarray], path: str | Path,
                 extra: Mapping[str, Any] | None = None) -> None:
    """Refuse to resume from the checkpoint ``state`` (read from ``path``) when a key it was written for has
    changed: ``<key>: the run was started with <old>, the config now has <new>``. ``extra`` holds the current
    values of recorded non-config facts (data shapes, as ``data.<name>``)."""
    raw = state.get("meta/run_config")
    if raw is None:
        log.info("checkpoint %s records no run config (written by an older version); only weight shapes are "
                 "checked on resume", path)
        return
    try:
        old = json.loads(str(np.asarray(raw).item()))
        if not isinstance(old, dict):
            raise ValueError("not a mapping")
    except (ValueError, TypeError) as e:
        from dppo.utils.checkpoint import CheckpointError
        raise CheckpointError(f"checkpoint {path}: its recorded run config could not be read: {e}") from e
    new = {key: _plain(get(cfg, key)) for key in RESUME_KEYS.get(kind, ())}
    new.update({f"data.{k}": _plain(v) for k, v in (extra or {}).items()})
    for key in sorted(new):
        if key not in old:
            continue
        diff = first_difference(old[key], new[key], key)
        if diff:
            where, was, now = diff
            raise ConfigError(f"{where}: the run in {Path(path).parent.parent} was started with {was!r}, the config "
                              f"now has {now!r}; a resumed run must keep it (start a new run, or resume with the "
                              f"old value)")


def check_base_checkpoint(cfg: Any, path: str | Path, state: Mapping[str, np.ndarray] | None = None,
                          keys: Sequence[str] = ("obs_dim", "action_dim", "horizon_steps", "cond_steps",
                                                 "denoising_steps")) -> None:
    """The values a policy checkpoint recorded (``meta/<key>``) must match the config that loads it, e.g. a
    policy pre-trained with 10 denoising steps cannot be fine-tuned with 20. Older checkpoints record nothing
    and pass."""
    if state is None:
        from dppo.utils.checkpoint import load_checkpoint
        state = load_checkpoint(path)
    for key in keys:
        recorded = state.get(f"meta/{key}")
        want = get(cfg, f"model.{key}", get(cfg, key))
        if recorded is None or want is None or np.asarray(recorded).size != 1:
            continue
        if _number(np.asarray(recorded).item(), True) != _number(want, True):
            where = f"model.{key}" if get(cfg, f"model.{key}") is not None else key
            raise ConfigError(f"{where}: the checkpoint {path} was trained with {np.asarray(recorded).item()}, the "
                              f"config has {want}")


# ---------------------------------------------------------------------------------------------- building
_UNKNOWN_ARG = (re.compile(r"unexpected keyword argument '(\w+)'"),
                re.compile(r"Unrecognized keyword arguments? passed to \w+: \{'(\w+)'"))


def instantiate(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets this project's own errors through unwrapped (a dataset or checkpoint
    problem keeps its one-line message) and turns an unknown keyword of a ``_target_`` block into a
    :class:`ConfigError` naming the key."""
    import hydra
    from hydra.errors import InstantiationException

    from dppo.utils.checkpoint import CheckpointError
    from dppo.utils.errors import DatasetError

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        cause, where = e, ""
        while isinstance(cause, InstantiationException):
            found = re.search(r"full_key: (\S+)", str(cause))
            where = found.group(1) if found else where
            if cause.__cause__ is None:
                break
            cause = cause.__cause__
        if isinstance(cause, (DatasetError, CheckpointError, ConfigError)):
            raise cause from e
        for pattern in _UNKNOWN_ARG:
            found = pattern.search(str(cause))
            if found:
                prefix = f"{where}." if where else ""
                raise ConfigError(f"{prefix}{found.group(1)}: unknown key ({type(cause).__name__}: "
                                  f"{str(cause).splitlines()[0]})") from e
        raise
