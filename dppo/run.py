"""Hydra entry shared by ``script/run.py`` and ``dppo run``: build the agent named by ``_target_`` and run it.

Configs written for the PyTorch reference work unchanged: their ``_target_`` class paths are mapped to
this package's classes (``REFERENCE_TARGETS``).

Hydra normally records the config in ``<run dir>/.hydra/`` before the app starts, so a refused resume would
overwrite the record of the run it refused to touch. Here the entry turns that off
(``hydra.output_subdir=null`` unless the command line sets it) and writes the same three files itself once the
agent is built, i.e. once every check (config, data, checkpoint) has passed. A refused run exits with one line
naming the problem.

Multirun (``-m seed=0,1,2``, any Hydra launcher: ``hydra/launcher=joblib`` runs the jobs as local processes): each
job is an ordinary run in its own ``logdir`` (the shipped ``logdir`` ends in ``_${seed}``), so each can be
resumed on its own. Unless the command line sets them, the entry points the sweep at that folder
(``hydra.sweep.subdir`` = the job's absolute ``logdir``; ``hydra.sweep.dir``, where Hydra writes
``multirun.yaml``, = ``${DPPO_LOG_DIR:-log}/multirun/<date>_<time>``). Launchers that run jobs in other
processes re-import this module there: the resolvers are registered at import, and the deferred Hydra record is
signalled to them through the ``DPPO_DEFERRED_HYDRA_RECORD`` environment variable.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
from pathlib import Path

import hydra
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

# reference class path -> dppo-tf class path
REFERENCE_TARGETS = {
    "agent.pretrain.train_diffusion_agent.TrainDiffusionAgent": "dppo.runners.pretrain.TrainDiffusionAgent",
    "agent.pretrain.train_gaussian_agent.TrainGaussianAgent": "dppo.runners.pretrain.TrainGaussianAgent",
    "agent.finetune.train_ppo_diffusion_agent.TrainPPODiffusionAgent": "dppo.runners.ppo.TrainPPODiffusionAgent",
    "agent.finetune.train_ppo_gaussian_agent.TrainPPOGaussianAgent": "dppo.runners.ppo_gaussian.TrainPPOGaussianAgent",
    "agent.finetune.train_sac_agent.TrainSACAgent": "dppo.runners.off_policy.TrainSACAgent",
    # DPOER of the seed TensorFlow port (its "SAC-PPO" names): the PPO runner with the faithful DPOER policy
    "agent.finetune.train_sac_ppo_diffusion_agent.TrainSACPPODiffusionAgent": "dppo.runners.ppo.TrainPPOAgent",
    "model.diffusion.diffusion_sac_ppo.SACPPODiffusion": "dppo.algos.dpoer.DPOERDiffusion",
    "agent.finetune.train_dipo_diffusion_agent.TrainDIPODiffusionAgent":
        "dppo.runners.replay_diffusion.TrainReplayDiffusionAgent",
    "agent.finetune.train_dql_diffusion_agent.TrainDQLDiffusionAgent":
        "dppo.runners.replay_diffusion.TrainReplayDiffusionAgent",
    "agent.finetune.train_qsm_diffusion_agent.TrainQSMDiffusionAgent":
        "dppo.runners.replay_diffusion.TrainReplayDiffusionAgent",
    "agent.finetune.train_idql_diffusion_agent.TrainIDQLDiffusionAgent":
        "dppo.runners.replay_diffusion.TrainReplayDiffusionAgent",
    "model.diffusion.diffusion_dipo.DIPODiffusion": "dppo.algos.dipo.DIPODiffusion",
    "model.diffusion.diffusion_dql.DQLDiffusion": "dppo.algos.dql.DQLDiffusion",
    "model.diffusion.diffusion_qsm.QSMDiffusion": "dppo.algos.qsm.QSMDiffusion",
    "model.diffusion.diffusion_idql.IDQLDiffusion": "dppo.algos.idql.IDQLDiffusion",
    "agent.finetune.train_rwr_diffusion_agent.TrainRWRDiffusionAgent":
        "dppo.runners.weighted_regression.TrainRWRDiffusionAgent",
    "agent.finetune.train_awr_diffusion_agent.TrainAWRDiffusionAgent":
        "dppo.runners.weighted_regression.TrainAWRDiffusionAgent",
    "model.diffusion.diffusion_rwr.RWRDiffusion": "dppo.algos.rwr.RWRDiffusion",
    "model.diffusion.diffusion_awr.AWRDiffusion": "dppo.algos.awr.AWRDiffusion",
    "agent.eval.eval_diffusion_agent.EvalDiffusionAgent": "dppo.runners.evaluate.EvalDiffusionAgent",
    "agent.eval.eval_gaussian_agent.EvalGaussianAgent": "dppo.runners.evaluate.EvalGaussianAgent",
    "model.diffusion.diffusion.DiffusionModel": "dppo.policies.diffusion.DiffusionModel",
    "model.diffusion.diffusion_ppo.PPODiffusion": "dppo.algos.ppo_diffusion.PPODiffusion",
    "model.diffusion.eta.EtaFixed": "dppo.algos.ppo_diffusion.EtaFixed",
    "model.diffusion.mlp_diffusion.DiffusionMLP": "dppo.nets.diffusion_mlp.DiffusionMLP",
    "model.common.critic.CriticObs": "dppo.nets.critics.CriticObs",
    "model.common.critic.CriticObsAct": "dppo.nets.critics.CriticObsAct",
    "model.common.gaussian.GaussianModel": "dppo.policies.gaussian.GaussianModel",
    "model.common.gmm.GMMModel": "dppo.policies.gmm.GMMModel",
    "model.common.mlp_gaussian.Gaussian_MLP": "dppo.nets.gaussian_mlp.Gaussian_MLP",
    "model.common.mlp_gmm.GMM_MLP": "dppo.nets.gmm_mlp.GMM_MLP",
    "model.rl.gaussian_ppo.PPO_Gaussian": "dppo.algos.ppo_gaussian.PPOGaussian",
    "model.rl.gmm_ppo.PPO_GMM": "dppo.algos.ppo_gmm.PPOGMM",
    "agent.finetune.train_ppo_diffusion_img_agent.TrainPPOImgDiffusionAgent":
        "dppo.runners.ppo_gaussian.TrainPPOImgDiffusionAgent",
    "agent.finetune.train_ppo_gaussian_img_agent.TrainPPOImgGaussianAgent":
        "dppo.runners.ppo_gaussian.TrainPPOImgGaussianAgent",
    "agent.finetune.train_ppo_exact_diffusion_agent.TrainPPOExactDiffusionAgent": "dppo.runners.ppo.TrainPPOAgent",
    "model.diffusion.diffusion_ppo_exact.PPOExactDiffusion": "dppo.algos.ppo_exact_diffusion.PPOExactDiffusion",
    "model.diffusion.unet.Unet1D": "dppo.nets.unet1d.Unet1D",
    "model.diffusion.mlp_diffusion.VisionDiffusionMLP": "dppo.nets.vision_diffusion_mlp.VisionDiffusionMLP",
    "model.common.transformer.Gaussian_Transformer": "dppo.nets.transformer.Gaussian_Transformer",
    "model.common.transformer.GMM_Transformer": "dppo.nets.transformer.GMM_Transformer",
    "model.common.mlp_gaussian.Gaussian_VisionMLP": "dppo.nets.gaussian_mlp.Gaussian_VisionMLP",
    "model.common.vit.VitEncoder": "dppo.nets.vit.VitEncoder",
    "model.common.critic.ViTCritic": "dppo.nets.critics.ViTCritic",
    "agent.dataset.sequence.StitchedSequenceDataset": "dppo.data.sequence.StitchedSequenceDataset",
    "env.plot_traj.TrajPlotter": "dppo.viz.trajectories.TrajPlotter",
}


def register_resolvers() -> None:
    """The reference's OmegaConf resolvers (eval, round_up, round_down) and ``dppo_abspath`` (the sweep's
    job folders)."""
    for name, fn in (("eval", eval), ("round_up", math.ceil), ("round_down", math.floor),
                     ("dppo_abspath", lambda p: os.path.abspath(str(p)))):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()  # at import: multirun launchers resolve the job configs in worker processes


def map_targets(cfg: DictConfig) -> None:
    """Rewrite reference ``_target_`` paths in place (recursively)."""
    if isinstance(cfg, DictConfig):
        for key in list(cfg.keys()):
            value = cfg._get_node(key)
            if key == "_target_" and isinstance(cfg[key], str) and cfg[key] in REFERENCE_TARGETS:
                cfg[key] = REFERENCE_TARGETS[cfg[key]]
            elif isinstance(value, DictConfig):
                map_targets(value)


def compose_config(config_dir: str | os.PathLike, name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``<config_dir>/<name>.yaml`` with Hydra overrides, outside ``@hydra.main``: resolved,
    reference targets mapped, struct mode off (for scripts that build several agents in one process)."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        cfg = compose(name, overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    OmegaConf.set_struct(cfg, False)
    map_targets(cfg)
    return cfg


HYDRA_SUBDIR = ".hydra"  # where Hydra would have written its record of the run
_deferred_hydra_record = False  # set by cli_main when it took over writing that record
DEFERRED_ENV = "DPPO_DEFERRED_HYDRA_RECORD"  # the same, for multirun jobs in other processes
MULTIRUN_DEFAULTS = ("hydra.sweep.dir='${oc.env:DPPO_LOG_DIR,log}/multirun/${now:%Y-%m-%d}_${now:%H-%M-%S}'",
                     "hydra.sweep.subdir='${dppo_abspath:${logdir}}'")


def run_config(cfg: DictConfig):
    """Resolve, build the agent class named by ``cfg._target_`` with the whole config, and run it."""
    from dppo.utils.validate import ConfigError

    unresolved = copy.deepcopy(cfg)
    try:
        OmegaConf.resolve(cfg)
    except Exception as e:  # an interpolation that cannot be computed (e.g. ${eval:...} of a null value)
        key = getattr(e, "full_key", "")
        raise ConfigError(f"{key + ': ' if key else ''}{str(e).splitlines()[0]}") from e
    OmegaConf.set_struct(cfg, False)
    map_targets(cfg)
    OmegaConf.set_struct(cfg, True)
    if "_target_" not in cfg:
        raise KeyError("the config has no top-level '_target_' naming the agent class to run")
    agent = get_class(cfg._target_)(cfg)  # validates everything; writes nothing unless the checks pass
    if _deferred_hydra_record or os.environ.get(DEFERRED_ENV) == "1":
        write_hydra_record(unresolved)
    return agent.run()


def write_hydra_record(task_cfg: DictConfig) -> None:
    """Write ``.hydra/{config,hydra,overrides}.yaml`` into the run dir as Hydra would have before the app."""
    from hydra.core.hydra_config import HydraConfig

    from dppo.utils.logging import save_config

    if not HydraConfig.initialized():
        return
    hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    out = Path(hydra_cfg.hydra.runtime.output_dir) / HYDRA_SUBDIR
    overrides = hydra_cfg.hydra.overrides.task
    with read_write(hydra_cfg.hydra), open_dict(hydra_cfg.hydra):
        hydra_cfg.hydra.output_subdir = HYDRA_SUBDIR
        # unresolved: an override's value may hold interpolations (the multirun defaults do)
        hydra_cfg.hydra.overrides.hydra = [o for o in OmegaConf.to_container(hydra_cfg.hydra.overrides.hydra)
                                           if not o.startswith("hydra.output_subdir=")]
    save_config(task_cfg, out, "config.yaml", resolve=False)
    save_config(hydra_cfg, out, "hydra.yaml", resolve=False)
    save_config(overrides, out, "overrides.yaml", resolve=False)


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig):
    from dppo.data.normalization import DatasetError
    from dppo.utils.checkpoint import CheckpointError
    from dppo.utils.guard import DivergenceError, RolloutError
    from dppo.utils.validate import ConfigError

    try:
        return run_config(cfg)
    except (ConfigError, DatasetError, CheckpointError, DivergenceError, RolloutError) as e:
        sys.exit(f"error: {e}")  # one line naming the key, the file or the source


def cli_main(argv: list[str] | None = None) -> None:
    """Run Hydra with ``argv`` (defaults to sys.argv[1:])."""
    global _deferred_hydra_record
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    register_resolvers()
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    args = sys.argv[1:]
    _deferred_hydra_record = not any(a.lstrip("+").startswith("hydra.output_subdir=") for a in args)
    if _deferred_hydra_record:
        sys.argv.append("hydra.output_subdir=null")
        os.environ[DEFERRED_ENV] = "1"
    else:
        os.environ.pop(DEFERRED_ENV, None)
    if "-m" in args or "--multirun" in args:
        for default in MULTIRUN_DEFAULTS:
            key = default.split("=", 1)[0]
            if not any(a.lstrip("+").startswith(key + "=") for a in args):
                sys.argv.append(default)
    main()
