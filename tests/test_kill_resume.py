"""Crash safety end to end, through the real entry point (script/run.py) in subprocesses: a tiny DPPO run on Avoid
is SIGKILLed between its metrics row and its checkpoint, inside a checkpoint write, and at a random moment, is
resumed each time, and must end with the same metrics.csv as an uninterrupted run. A resume with a changed
network is then refused without touching the run's recorded config."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf
from test_finetune_runner import avoid_cfg

ROOT = Path(__file__).resolve().parents[1]
N_ITR = 8


def write_config(tmp_path: Path, name: str, logdir: Path, norm: str) -> None:
    cfg = avoid_cfg(logdir, norm, **{"train.n_train_itr": N_ITR, "train.save_model_freq": 3, "train.update_epochs": 1})
    cfg.hydra = {"run": {"dir": "${logdir}"}}
    cfg.wandb = None
    OmegaConf.save(cfg, tmp_path / f"{name}.yaml")


def launch(tmp_path: Path, name: str, *overrides: str, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("DPPO_FAULT", None)
    if fault:
        env["DPPO_FAULT"] = fault
    return subprocess.Popen([sys.executable, str(ROOT / "script" / "run.py"), f"--config-dir={tmp_path}",
                             f"--config-name={name}", *overrides], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def n_rows(run: Path) -> int:
    try:
        return len((run / "metrics.csv").read_text().splitlines()) - 1
    except FileNotFoundError:
        return 0


def test_killed_and_resumed_run_logs_what_an_uninterrupted_run_logs(tmp_path, avoid_norm):
    ref_dir, run = tmp_path / "ref", tmp_path / "run"
    write_config(tmp_path, "ref", ref_dir, avoid_norm)
    write_config(tmp_path, "tiny", run, avoid_norm)
    resume = "+resume=true"

    # 1. killed after iteration 3's row, before its checkpoint (state_0 is the latest); the reference runs alongside
    ref = launch(tmp_path, "ref")
    first = launch(tmp_path, "tiny", fault="metrics:3")
    assert first.wait(timeout=120) == -signal.SIGKILL, first.stderr.read()
    assert n_rows(run) == 4 and not (run / "checkpoint" / "state_3.npz").exists()
    # 2. resumed from state_0 (rows 1-3 are logged again), killed inside the write of state_6: a temporary file
    second = launch(tmp_path, "tiny", resume, fault="write:state_6.npz")
    assert second.wait(timeout=120) == -signal.SIGKILL, second.stderr.read()
    assert list((run / "checkpoint").glob("*.tmp.npz")), "the killed write should leave its temporary file"
    assert not (run / "checkpoint" / "state_6.npz").exists() and n_rows(run) == 7
    # 3. resumed from state_3 and killed at a random moment once it is iterating again
    seed = int.from_bytes(os.urandom(4), "little")
    third = launch(tmp_path, "tiny", resume)
    deadline = time.time() + 120
    while third.poll() is None and time.time() < deadline and n_rows(run) == 7:
        time.sleep(0.05)  # until it has dropped rows 4-6 (past state_3): it is in its training loop
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    third.send_signal(signal.SIGKILL)
    third.wait(timeout=30)
    # 4. resumed until done
    for _ in range(3):
        last = launch(tmp_path, "tiny", resume)
        if last.wait(timeout=180) == 0:
            break
    assert last.returncode == 0, last.stderr.read()
    assert ref.wait(timeout=180) == 0, ref.stderr.read()

    assert not list((run / "checkpoint").glob("*.tmp.npz")), "stale temporary files are removed at start"
    got, want = rows(run), rows(ref_dir)
    assert [r["step"] for r in got] == [str(i) for i in range(N_ITR)], f"random kill seed {seed}"
    timeless = [[(k, v) for k, v in r.items() if not k.startswith("time/")] for r in (*got, *want)]
    assert timeless[:N_ITR] == timeless[N_ITR:], f"random kill seed {seed}"  # every value, to the last digit

    # a resume with a changed network is refused with one line, and the run's recorded config is untouched
    recorded = {p: p.read_bytes() for p in [run / "config.yaml", run / "metrics.csv", *(run / ".hydra").iterdir()]}
    refused = launch(tmp_path, "tiny", resume, "model.actor.mlp_dims=[16,16,16]")
    assert refused.wait(timeout=120) != 0
    err = refused.stderr.read().strip().splitlines()[-1]
    assert "model.actor.mlp_dims" in err and "[32, 32, 32]" in err and "[16, 16, 16]" in err, err
    assert {p: p.read_bytes() for p in recorded} == recorded
