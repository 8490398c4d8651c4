"""Every shipped YAML composes and builds its model (networks, critic, schedules; no data, env or weights):
a config whose keys do not fit the classes it names fails here, not after a run has started."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dppo.run import compose_config
from dppo.runners.replay_diffusion import target_networks
from dppo.utils import validate

CFG = Path(__file__).resolve().parent.parent / "cfg"
WITH_MODEL = sorted(p for p in CFG.rglob("*.yaml") if "_target_" in (OmegaConf.load(p).get("model") or {}))


def test_every_kind_of_config_is_covered():
    stages = {p.relative_to(CFG).parts[1] for p in WITH_MODEL}
    assert {"pretrain", "finetune", "eval"} <= stages and len(WITH_MODEL) >= 100


@pytest.mark.parametrize("path", WITH_MODEL, ids=lambda p: str(p.relative_to(CFG)))
def test_model_builds(path: Path):
    raw = OmegaConf.load(path)
    cfg = compose_config(path.parent, path.stem, ["base_policy_path=null"] if "base_policy_path" in raw else [])
    model_cfg = cfg.model
    if "network_path" in model_cfg:
        model_cfg.network_path = None  # weights are not part of this check
    # PPO models take a second actor (the fine-tuned copy); models that fine-tune their only network do not
    takes_ft = "actor" in model_cfg and validate.target_accepts(model_cfg._target_)("actor_ft")
    extra = {"actor_ft": validate.instantiate(model_cfg.actor)} if takes_ft else {}
    extra.update(target_networks(model_cfg))  # the Polyak target copies of the replay-based baselines
    model = validate.instantiate(model_cfg, **extra)
    assert model.horizon_steps == int(cfg.horizon_steps)
    assert model.action_dim == int(cfg.action_dim)
