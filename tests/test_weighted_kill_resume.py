"""DAWR crash safety through the real entry point (script/run.py, subprocesses): killed inside a checkpoint write
(its buffer file already written) and inside a buffer write, resumed each time, it must log exactly what an
uninterrupted run logs."""

import signal

from omegaconf import OmegaConf
from test_kill_resume import launch, rows
from test_weighted_regression import base_cfg


def test_killed_dawr_run_resumes_to_what_an_uninterrupted_run_logs(tmp_path, avoid_norm):
    wrappers = {"d3il_lowdim": {"normalization_path": avoid_norm},
                "multi_step": {"n_obs_steps": 1, "n_action_steps": 1, "max_episode_steps": 6}}
    for name in ("ref", "run"):
        cfg = base_cfg(tmp_path / name, "awr", "avoiding-m5", 4, 2, n_envs=4, n_steps=6, n_itr=6, wrappers=wrappers,
                       **{"normalization_path": avoid_norm, "env.max_episode_steps": 6, "train.save_model_freq": 2,
                          "train.buffer_size": 10})
        cfg.hydra = {"run": {"dir": "${logdir}"}}
        OmegaConf.save(cfg, tmp_path / f"{name}.yaml")
    run = tmp_path / "run"
    ref = launch(tmp_path, "ref")
    first = launch(tmp_path, "run", fault="write:state_2.npz")  # buffer_2.npz is complete, state_2 is not
    assert first.wait(timeout=180) == -signal.SIGKILL, first.stderr.read()
    assert (run / "checkpoint" / "buffer_2.npz").is_file() and not (run / "checkpoint" / "state_2.npz").exists()
    second = launch(tmp_path, "run", "+resume=true", fault="write:buffer_4.npz")  # from state_0 and buffer_0
    assert second.wait(timeout=180) == -signal.SIGKILL, second.stderr.read()
    last = launch(tmp_path, "run", "+resume=true")  # from state_2 and buffer_2
    assert last.wait(timeout=180) == 0, last.stderr.read()
    assert ref.wait(timeout=180) == 0, ref.stderr.read()
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == [
        "buffer_5.npz", "state_0.npz", "state_2.npz", "state_4.npz", "state_5.npz"]
    got, want = rows(run), rows(tmp_path / "ref")
    assert [r["step"] for r in got] == [str(i) for i in range(6)]
    strip = [[(k, v) for k, v in r.items() if not k.startswith("time/")] for r in (*got, *want)]
    assert strip[:6] == strip[6:]  # every value, to the last digit
