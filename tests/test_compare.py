"""``dppo compare`` on synthetic run folders: the table's numbers, bootstrap CIs, panels per task, runs of
different lengths, and clear errors."""

import csv

import numpy as np
import pytest

from dppo.cli import main as dppo_main
from dppo.viz.compare import CompareError, compare


def make_run(folder, env, steps, values, metric="eval/avg_episode_reward"):
    """A run folder with config.yaml (env.name) and metrics.csv: eval values at ``steps``, train rows between."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"env:\n  name: {env}\n  n_envs: 2\n")
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", metric, "train/avg_episode_reward", "env_steps"])
        for i, (s, v) in enumerate(zip(steps, values)):
            w.writerow([2 * i, v, "", s])
            w.writerow([2 * i + 1, "", v - 1, s + 5])  # a training row: no eval value
    return folder


def test_table_numbers_cis_and_panels(tmp_path, capsys):
    steps = [0, 10, 20, 30]
    finals = {}
    for seed, offset in enumerate((0.0, 3.0, 9.0)):
        vals = [1.0 + offset, 2.0 + offset, 4.0 + offset, 6.0 + offset]
        make_run(tmp_path / "runs" / f"a_hopper_{seed}", "hopper-medium-v2", steps, vals)
        finals[seed] = np.mean(vals[-3:])  # the default final value: mean of the last 3 eval points
        make_run(tmp_path / "runs" / f"b_hopper_{seed}", "hopper-medium-v2", steps, [v * 2 for v in vals])
    make_run(tmp_path / "runs" / "a_walker_0", "walker2d-medium-v2", steps, [1, 1, 1, 1])
    make_run(tmp_path / "runs" / "a_walker_1", "walker2d-medium-v2", steps[:3], [2, 2, 2])  # shorter run

    out = tmp_path / "cmp" / "compare.png"
    rows, text = compare(out, {"A": str(tmp_path / "runs" / "a_*"), "B": str(tmp_path / "runs" / "b_*")})
    assert out.stat().st_size > 0 and out.with_suffix(".md").read_text() == text
    by = {(r.panel, r.label): r for r in rows}
    assert set(by) == {("hopper-medium-v2", "A"), ("hopper-medium-v2", "B"), ("walker2d-medium-v2", "A")}
    a = by[("hopper-medium-v2", "A")]
    # finals 4, 7, 13: mean 8; IQM of three values (25% trimmed, rounding down to 0 per side) = the mean
    assert a.runs == 3 and a.finals == pytest.approx([4.0, 7.0, 13.0])
    assert a.mean == pytest.approx(np.mean(list(finals.values()))) == pytest.approx(8.0)
    assert a.iqm == pytest.approx(8.0)
    assert a.mean_ci[0] < a.mean < a.mean_ci[1] and a.iqm_ci[0] <= a.iqm <= a.iqm_ci[1]
    assert 4.0 <= a.mean_ci[0] and a.mean_ci[1] <= 13.0  # a bootstrap mean stays within the data
    assert by[("hopper-medium-v2", "B")].mean == pytest.approx(16.0)
    w = by[("walker2d-medium-v2", "A")]
    assert w.runs == 2 and w.final_steps == (20.0, 30.0) and w.mean == pytest.approx(1.5)
    assert "| hopper-medium-v2 | A | 3 | 30 | 8 | [" in text
    assert "the curve stops at the shortest" in text  # the walker runs end at different env steps

    # --last-k 1 through the command line, one panel, success metric missing -> a clear error
    dppo_main(["compare", str(tmp_path / "one.png"), f"A={tmp_path / 'runs' / 'a_hopper_*'}", "--last-k", "1",
               "--panel", "none", "--band", "ci", "--reps", "500"])
    printed = capsys.readouterr().out
    assert "| all | A | 3 | 30 | 10 |" in printed and (tmp_path / "one.md").is_file()  # (6 + 9 + 15) / 3

    # --max-x 20: the same runs cut at 20 env steps (points at 0, 10, 20): last values 4, 7, 13 -> mean 8
    dppo_main(["compare", str(tmp_path / "cut.png"), f"A={tmp_path / 'runs' / 'a_hopper_*'}", "--last-k", "1",
               "--panel", "none", "--max-x", "20", "--reps", "500"])
    assert "| all | A | 3 | 20 | 8 |" in capsys.readouterr().out


def test_errors_name_the_problem(tmp_path):
    make_run(tmp_path / "r0", "avoiding-m5", [0, 10], [0.1, 0.2])
    with pytest.raises(CompareError, match="matches nothing"):
        compare(tmp_path / "x.png", {"A": str(tmp_path / "nope_*")})
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CompareError, match="none is a run folder"):
        compare(tmp_path / "x.png", {"A": str(tmp_path / "empty_*")})
    with pytest.raises(CompareError, match="eval/success_rate.*choose one with --metric"):
        compare(tmp_path / "x.png", {"A": str(tmp_path / "r*")}, metric="eval/success_rate")
    with pytest.raises(SystemExit, match="expected LABEL=RUN_GLOB"):
        dppo_main(["compare", str(tmp_path / "x.png"), str(tmp_path / "r0")])
    rows, _ = compare(tmp_path / "x.png", {"A": str(tmp_path / "r*")}, metric="train/avg_episode_reward", last_k=1)
    assert rows[0].mean == pytest.approx(-0.8) and rows[0].mean_ci == (rows[0].mean, rows[0].mean)  # one run
