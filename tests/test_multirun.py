"""Hydra multirun through the real entry point: ``script/run.py -m seed=0,1 hydra/launcher=joblib`` runs two tiny
pre-trainings as local processes, each in its own logdir with its own checkpoints and Hydra record, and the same
command with ``+resume=true`` continues each from its own checkpoint."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_pretrain import pretrain_cfg

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")


def multirun(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "DPPO_LOG_DIR": str(tmp_path / "log")}
    return subprocess.run([sys.executable, str(ROOT / "script" / "run.py"), f"--config-dir={tmp_path}",
                           "--config-name=tiny", "-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                           *overrides], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_joblib_multirun_writes_one_resumable_run_per_seed(tmp_path, two_mode_dataset):
    cfg = pretrain_cfg(two_mode_dataset, "${oc.env:DPPO_LOG_DIR}/tiny/run_${seed}", n_epochs=2, save_model_freq=1,
                       batch_size=256)
    cfg.model.network.mlp_dims = [32, 32, 32]
    cfg.hydra = {"run": {"dir": "${logdir}"}}
    OmegaConf.save(cfg, tmp_path / "tiny.yaml")

    out = multirun(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [tmp_path / "log" / "tiny" / f"run_{s}" for s in (0, 1)]
    for run in runs:
        assert (run / "checkpoint" / "state_2.npz").is_file(), sorted(p.name for p in run.rglob("*"))
        assert OmegaConf.load(run / ".hydra" / "config.yaml").seed == int(run.name[-1])  # its own Hydra record
        assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2
    assert list((tmp_path / "log" / "multirun").glob("*/multirun.yaml"))  # the sweep's record, not in the cwd
    assert not (tmp_path / "multirun.yaml").exists()

    # the same sweep, resumed with a larger budget: each job continues from its own state_2
    out = multirun(tmp_path, "+resume=true", "train.n_epochs=3", "train.lr_scheduler.first_cycle_steps=3")
    assert out.returncode == 0, out.stderr[-3000:]
    for run in runs:
        assert (run / "checkpoint" / "state_3.npz").is_file()
        epochs = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
        assert len(epochs) == 3, epochs
