"""Every shipped PPO fine-tuning config gives the reference's optimizer steps per iteration and transitions per
step (reference v0.5: ``batch_size`` counts env steps; a DPPO minibatch carries all K' transitions of them)."""

from pathlib import Path

import pytest

from dppo.run import compose_config
from dppo.runners.ppo import minibatch_plan

CFG = Path(__file__).resolve().parent.parent / "cfg"
CONFIGS = sorted(CFG.glob("*/finetune/*/ft_ppo_*.yaml"))

# (optimizer steps per iteration, transitions per step) of the reference's configs, from their n_envs x n_steps,
# batch_size, update_epochs, grad_accumulate and K': e.g. gym 40 x 500 env steps / 5000 = 4 minibatches x 5 epochs,
# each 5000 x K' = 10 transitions; robomimic pixels 50 x 300 / (500 x 15 accumulated) = 2 steps x 10 epochs of
# 7500 x K' = 5 (DDIM) transitions.
REFERENCE = {
    **{f"d3il/finetune/avoid_{m}/ft_ppo_{p}.yaml": v for m in ("m1", "m2", "m3")
       for p, v in (("diffusion_mlp", (20, 6250)), ("gaussian_mlp", (20, 625)), ("gmm_mlp", (20, 625)))},
    **{f"gym/finetune/{t}-v2/ft_ppo_diffusion_mlp.yaml": (20, 50000) for t in ("hopper", "walker2d", "halfcheetah")},
}
for task, epochs, env_steps_per_step, img_acc_rows in (("lift", 10, 7500, 37500), ("can", 10, 7500, 37500),
                                                       ("square", 10, 10000, 50000),
                                                       ("transport", 8, 10000, 50000)):
    steps = 2 * epochs
    for policy in ("diffusion_mlp", "diffusion_unet"):
        REFERENCE[f"robomimic/finetune/{task}/ft_ppo_{policy}.yaml"] = (steps, env_steps_per_step * 10)
    for policy in ("gaussian_mlp", "gaussian_transformer", "gmm_mlp", "gmm_transformer", "gaussian_mlp_img"):
        REFERENCE[f"robomimic/finetune/{task}/ft_ppo_{policy}.yaml"] = (steps, env_steps_per_step)
    REFERENCE[f"robomimic/finetune/{task}/ft_ppo_diffusion_mlp_img.yaml"] = (steps, img_acc_rows)


def test_every_reference_config_is_covered():
    shipped = {str(p.relative_to(CFG)) for p in CONFIGS}
    assert set(REFERENCE) <= shipped, sorted(set(REFERENCE) - shipped)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(CFG)))
def test_minibatch_plan_matches_the_reference(path: Path):
    cfg = compose_config(path.parent, path.stem, ["base_policy_path=x"])
    plan = minibatch_plan(cfg)
    assert int(cfg.train.batch_size) <= plan.env_steps, "a minibatch larger than the iteration's data"
    key = str(path.relative_to(CFG))
    if key in REFERENCE:
        assert (plan.optimizer_steps, plan.transitions_per_step) == REFERENCE[key]
