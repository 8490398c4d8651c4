"""Config checking: every shipped YAML passes; unknown keys, wrong types, bad ranges and contradicting keys are
refused in one line naming the key, whatever block they are in and however they were added."""

from pathlib import Path

import pytest

from dppo.run import compose_config
from dppo.utils.validate import COMPAT_KEYS, ConfigError, check_value, validate_config

CFG = Path(__file__).resolve().parent.parent / "cfg"
SHIPPED = sorted(CFG.glob("*/*/*/*.yaml"))
STAGE_KIND = {"pretrain": "pretrain", "finetune": "ppo", "eval": "eval"}


def kind_of(cfg, path: Path) -> str:
    """The schema the config's runner validates against: its ``config_kind`` when it names one, else by stage."""
    from hydra.utils import get_class

    if cfg._target_.endswith("TrainSACAgent"):
        return "sac"
    return getattr(get_class(cfg._target_), "config_kind", None) or STAGE_KIND[path.relative_to(CFG).parts[1]]


def compose(path: Path, *overrides: str):
    extra = ["base_policy_path=x"] if "base_policy_path" in path.read_text() else []
    return compose_config(path.parent, path.stem, [*extra, *overrides])


def test_every_stage_and_runner_is_shipped():
    kinds = {kind_of(compose(p), p) for p in SHIPPED[::7]} | {"sac"}
    assert {"pretrain", "ppo", "sac", "eval"} <= kinds and len(SHIPPED) > 100
    assert {kind_of(compose(p), p) for p in SHIPPED if p.stem in ("ft_rwr_diffusion_mlp", "ft_awr_diffusion_mlp")} == {
        "weighted"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CFG)))
def test_every_shipped_config_validates(path):
    cfg = compose(path, "wandb=null")  # the README's switch works for every config, evaluation included
    validate_config(cfg, kind_of(cfg, path))


AVOID_PRE = CFG / "d3il/pretrain/avoid_m2/pre_diffusion_mlp.yaml"
AVOID_FT = CFG / "d3il/finetune/avoid_m2/ft_ppo_diffusion_mlp.yaml"
AVOID_EVAL = CFG / "d3il/eval/avoid_m2/eval_diffusion_mlp.yaml"
HOPPER_SAC = CFG / "gym/finetune/hopper-v2/sac_mlp.yaml"
GMM_IMG = CFG / "robomimic/finetune/can/ft_ppo_gaussian_mlp_img.yaml"


@pytest.mark.parametrize("path, override, message", [
    # unknown keys in every block, added with + or written in a YAML, with a hint
    (AVOID_PRE, "+train.batch_sise=8", r"^train\.batch_sise: unknown key \(did you mean 'train\.batch_size'\?\)$"),
    (AVOID_PRE, "+n_epochs=8", r"^n_epochs: unknown key \(it belongs at 'train\.n_epochs'\)$"),
    (AVOID_PRE, "+ema.decay_rate=0.9", r"^ema\.decay_rate: unknown key \(did you mean 'ema\.decay'\?\)$"),
    (AVOID_PRE, "+train_dataset.max_episodes=3", r"train_dataset\.max_episodes: unknown key .*max_n_episodes"),
    (AVOID_FT, "+env.n_env=3", r"^env\.n_env: unknown key \(did you mean 'env\.n_envs'\?\)$"),
    (AVOID_FT, "+ft_denoising_step=3", r"^ft_denoising_step: unknown key \(did you mean 'ft_denoising_steps'\?\)$"),
    (AVOID_FT, "+train.actor_lr_schedular.min_lr=1", r"^train\.actor_lr_schedular: unknown key"),
    (AVOID_FT, "+wandb.projekt=x", r"^wandb\.projekt: unknown key \(did you mean 'wandb\.project'\?\)$"),
    (AVOID_EVAL, "+render_nums=3", r"^render_nums: unknown key \(did you mean 'render_num'\?\)$"),
    (HOPPER_SAC, "+model.actor.std_maxx=3", r"^model\.actor\.std_maxx: unknown key .*'model\.actor\.std_max'"),
    (HOPPER_SAC, "+train.batchsize=3", r"^train\.batchsize: unknown key .*'train\.batch_size'"),
    # types and ranges, including values that used to divide by zero in a graph or fail without a key
    (AVOID_PRE, "train.batch_size=0", r"^train\.batch_size: expected an integer > 0, got 0$"),
    (AVOID_FT, "train.batch_size=-5", r"^train\.batch_size: expected an integer > 0, got -5$"),
    (AVOID_PRE, "train.learning_rate=fast", r"^train\.learning_rate: expected a number >= 0, got 'fast'$"),
    (AVOID_FT, "train.gamma=1.5", r"^train\.gamma: expected a number in \[0,1\], got 1\.5$"),
    (AVOID_FT, "train.update_epochs=2.5", r"^train\.update_epochs: expected an integer > 0, got 2\.5$"),
    (AVOID_FT, "train.update_epochs=null", r"^train\.update_epochs: expected an integer > 0, got null$"),
    (AVOID_FT, "train.force_train=maybe", r"^train\.force_train: expected true or false, got 'maybe'$"),
    (HOPPER_SAC, "train.buffer_size=0", r"^train\.buffer_size: expected an integer > 0"),
    (GMM_IMG, "train.grad_accumulate=0", r"^train\.grad_accumulate: expected an integer > 0"),
    (AVOID_FT, "+train.micro_batch=-1", r"^train\.micro_batch: expected an integer >= 0"),
    # keys that contradict each other
    (AVOID_FT, "ft_denoising_steps=30", r"model\.ft_denoising_steps \(30\) must be <= model\.denoising_steps \(20\)"),
    (AVOID_FT, "act_steps=8", r"act_steps \(8\) must be <= horizon_steps \(4\)"),
    (AVOID_PRE, "model.network.cond_dim=5", r"model\.network\.cond_dim is 5 but obs_dim x cond_steps is 4 x 1 = 4"),
    (AVOID_FT, "env.wrappers.multi_step.n_obs_steps=2", r"env\.wrappers\.multi_step\.n_obs_steps is 2 but cond_steps"),
    (AVOID_PRE, "train.lr_scheduler.warmup_steps=20000", r"train\.lr_scheduler\.warmup_steps \(20000\) must be <"),
])
def test_bad_config_gives_one_line_naming_the_key(path, override, message):
    cfg = compose(path, override)
    with pytest.raises(ConfigError, match=message) as err:
        validate_config(cfg, kind_of(cfg, path))
    assert "\n" not in str(err.value)


def test_every_problem_is_listed_in_the_one_error():
    cfg = compose(AVOID_PRE, "train.batch_size=0", "+train.foo=1", "ema.decay=2")
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, "pretrain")
    assert all(k in str(err.value) for k in ("train.batch_size", "train.foo", "ema.decay"))


def test_compatibility_keys_are_accepted_and_changing_cond_steps_is_valid():
    cfg = compose(AVOID_FT, "+train.plot_freq=3", "+env.use_image_obs=false", "device=cpu")
    validate_config(cfg, "ppo")
    assert "plot_freq" in COMPAT_KEYS["train"] and "device" in COMPAT_KEYS[""]
    validate_config(compose(AVOID_PRE, "cond_steps=2"), "pretrain")  # interpolation keeps the blocks consistent
    validate_config(compose(AVOID_FT, "+train.micro_batch=500"), "ppo")
    validate_config(compose(AVOID_FT, "+train.micro_batch=null"), "ppo")


def test_value_specs():
    assert check_value("k", "1e-4", "float>0") is None  # numbers written as strings (YAML 1.1 "1e-4") pass
    assert check_value("k", True, "int>0") == "k: expected an integer > 0, got True"
    assert check_value("k", None, "float?>0") is None
    assert check_value("k", float("nan"), "float") == "k: expected a number, got nan"
    assert check_value("k", 3.0, "int>0") is None and check_value("k", [1], "list") is None
