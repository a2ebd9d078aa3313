"""rlexp.compare on synthetic run folders whose statistics are computed by hand below."""

from __future__ import annotations

import csv
import itertools
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlexp.compare import (bootstrap_ci, config_key, config_labels, first_reached, iqm, learning_curve, load_runs,
                           summarize)
from rlexp.compare.__main__ import main
from rlexp.compare.runs import find_run_dirs
from rlexp.compare.stats import group_runs

THRESHOLD = 300.0
EVAL_SHAPE = (0.25, 0.5, 1.25, 1.0)  # eval returns at frames 1000..4000 as multiples of the final return
# Configuration loss=a: 5 seeds. Final returns 100, 200, 350, 400, 1000; training speeds in frames/second.
A_FINAL, A_FPS = (100.0, 200.0, 350.0, 400.0, 1000.0), (400.0, 450.0, 500.0, 550.0, 600.0)
B_FINAL, B_FPS = (10.0, 20.0, 60.0), (1000.0, 1000.0, 1000.0)


def metrics_rows(final: float, fps: float, last_frames: int = 4000) -> list[dict]:
    """A log step every 500 frames, an evaluation every 1000; train/fps is a decoy the FPS column must not use."""
    rows = []
    for frames in range(500, last_frames + 1, 500):
        row = {"frames": frames, "loss_objective": 0.1, "train/fps": 1.0, "train/seconds": frames / fps}
        if frames % 1000 == 0:
            row["eval/episode_return"] = EVAL_SHAPE[frames // 1000 - 1] * final
        rows.append(row)
    return rows


def write_run(run_dir: Path, overrides: list[str], seed: int, rows: list[dict] | None,
              experiment: str = "cmp") -> Path:
    """A run folder as the trainer writes it: config.yaml, .hydra/overrides.yaml, metrics.jsonl."""
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"experiment": experiment, "seed": seed, "loss": {"name": "x"},
              "collector": {"total_frames": 4000, "frames_per_batch": 500}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if rows is not None:
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return run_dir


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Jobs 0-4: loss=a with noise overrides; 5, 6, 10: loss=b; 7 stopped early; 8 never evaluated."""
    root = tmp_path / "multirun" / "cmp" / "2026-01-01_00-00-00"
    noise = [["hydra.job.chdir=true"], ["logger=csv", "logger.mode=offline"], [], [], []]
    for seed, (final, fps) in enumerate(zip(A_FINAL, A_FPS)):
        rows = metrics_rows(final, fps)
        if seed == 3:  # a first attempt, then the job restarted from scratch and appended
            rows = [{"frames": 500, "train/seconds": 1.0}, {"frames": 1000, "train/seconds": 2.0,
                                                            "eval/episode_return": 9999.0}] + rows
        write_run(root / str(seed), ["+experiment=cmp", "loss=a", f"seed={seed}", *noise[seed]], seed, rows)
    for job, seed, final, fps in zip((5, 6, 10), range(3), B_FINAL, B_FPS):
        write_run(root / str(job), ["+experiment=cmp", "loss=b", f"seed={seed}"], seed, metrics_rows(final, fps))
    write_run(root / "7", ["+experiment=cmp", "loss=a", "seed=7"], 7, metrics_rows(5000.0, 500.0, last_frames=2000))
    write_run(root / "8", ["+experiment=cmp", "loss=a", "seed=8"], 8, [{"frames": 500, "train/seconds": 1.0}])
    return root


# --- estimators ---------------------------------------------------------------------------------------------

def test_iqm_weights_quartile_straddling_values_by_covered_fraction():
    assert iqm([7.0]) == 7.0
    assert iqm([1.0, 3.0]) == pytest.approx(2.0)
    assert iqm([60.0, 10.0, 20.0]) == pytest.approx(10 / 6 + 20 * 2 / 3 + 60 / 6)  # 25
    assert iqm([1.0, 2.0, 4.0, 100.0]) == pytest.approx(3.0)  # middle two, as trim_mean(x, 0.25)
    assert iqm([1000.0, 100.0, 200.0, 350.0, 400.0]) == pytest.approx(0.3 * 200 + 0.4 * 350 + 0.3 * 400)  # 320
    assert iqm([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 80.0]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6


def test_bootstrap_ci_matches_the_exact_bootstrap_distribution():
    samples = np.array(A_FINAL)
    exact_means = [np.mean(draw) for draw in itertools.product(samples, repeat=len(samples))]  # all 5^5 resamples
    exact_low, exact_high = np.quantile(exact_means, [0.025, 0.975], method="inverted_cdf")  # 180, 720
    low, high = bootstrap_ci(samples)
    assert low == pytest.approx(exact_low, abs=20) and high == pytest.approx(exact_high, abs=20)
    assert low < samples.mean() < high
    assert bootstrap_ci(samples) == (low, high)  # fixed RNG seed: reproducible
    assert bootstrap_ci(samples, seed=1) != (low, high)
    assert bootstrap_ci(np.array(B_FINAL)) == (10.0, 60.0)  # each extreme has mass 1/27 > 2.5%


def test_bootstrap_ci_degenerate_cases_and_columns():
    assert bootstrap_ci(np.full(4, 3.5)) == (3.5, 3.5)
    assert all(np.isnan(bound) for bound in bootstrap_ci(np.array([3.0])))
    table = np.array([[1.0, 10.0], [2.0, 40.0], [6.0, 20.0]])
    low, high = bootstrap_ci(table)
    assert (low[1], high[1]) == bootstrap_ci(table[:, 1])  # columns resample the same seeds


def test_first_reached():
    assert first_reached([1, 2, 3], [0.0, 5.0, 4.0], 4.0) == 2.0
    assert first_reached([1, 2, 3], [0.0, 1.0, 2.0], 4.0) == float("inf")


# --- configurations -----------------------------------------------------------------------------------------

def test_config_key_drops_seed_and_noise_and_falls_back_to_the_experiment():
    overrides = ["seed=3", "loss=grpo", "hydra.job.chdir=true", "hydra/launcher=joblib", "logger=csv",
                 "+logger.mode=offline", "+seedling=1", "++optim.lr=0.1"]
    assert config_key(overrides, "exp") == ("++optim.lr=0.1", "+seedling=1", "loss=grpo")
    assert config_key(["+seed=1", "logger=none"], "cleanrl_cartpole") == ("cleanrl_cartpole",)


def test_config_labels_drop_shared_overrides():
    keys = [("+experiment=cmp", "loss=a"), ("+experiment=cmp", "loss=b", "optim.lr=0.1")]
    assert config_labels(keys) == (["loss=a", "loss=b,optim.lr=0.1"], ("+experiment=cmp",))
    assert config_labels([("+experiment=cmp", "loss=a")]) == (["+experiment=cmp,loss=a"], ())
    nested = [("loss=a",), ("loss=a", "optim.lr=0.1")]  # dropping loss=a would leave an empty label
    assert config_labels(nested) == (["loss=a", "loss=a,optim.lr=0.1"], ())


# --- runs and table numbers ---------------------------------------------------------------------------------

def test_find_run_dirs_in_natural_order(sweep):
    assert [path.name for path in find_run_dirs([sweep, sweep / "10"])] == \
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "10"]


def test_load_runs_groups_minus_seed_and_skips_unfinished(sweep):
    runs, skipped = load_runs([sweep])
    assert {path.name: reason for path, reason in skipped} == {"7": "stopped at 2000 of 4000 frames",
                                                               "8": "no evaluation logged"}
    groups = group_runs(runs)
    assert list(groups) == [("+experiment=cmp", "loss=a"), ("+experiment=cmp", "loss=b")]
    assert [run.seed for run in groups[("+experiment=cmp", "loss=a")]] == [0, 1, 2, 3, 4]
    restarted = groups[("+experiment=cmp", "loss=a")][3]
    assert restarted.eval_frames.tolist() == [1000, 2000, 3000, 4000]  # the aborted first attempt is dropped
    assert restarted.eval_returns.tolist() == [100.0, 200.0, 500.0, 400.0]


def test_summary_numbers(sweep):
    a, b = summarize(load_runs([sweep])[0], threshold=THRESHOLD)
    assert (a.seeds, b.seeds) == (5, 3)
    assert a.final.mean == pytest.approx(410.0) and a.best.mean == pytest.approx(512.5)
    assert a.final.low < 410.0 < a.final.high and a.best.low < 512.5 < a.best.high
    assert a.final_iqm == pytest.approx(320.0)
    # First evaluation >= 300: never (finals 100, 200), frames 3000 (350: 437.5 at 3000 = 6.0 s at 500 fps),
    # 3000 (400: 500 at 3000 = 5.45 s), 2000 (1000: 500 at 2000 = 3.33 s). Medians with never = inf.
    assert a.reached == 3 and a.frames_to_threshold == 3000.0
    assert a.seconds_to_threshold == pytest.approx(6.0)
    assert a.fps == pytest.approx(np.mean(A_FPS))  # 500: frames / train/seconds, not the logged train/fps
    assert b.final.mean == pytest.approx(30.0) and b.best.mean == pytest.approx(37.5)
    assert b.final_iqm == pytest.approx(25.0)
    assert b.reached == 0 and b.frames_to_threshold == float("inf") and b.seconds_to_threshold == float("inf")
    assert b.fps == pytest.approx(1000.0)
    unthresholded = summarize(load_runs([sweep])[0])[0]
    assert unthresholded.reached is None and np.isnan(unthresholded.frames_to_threshold)


def test_learning_curves_by_frames_and_by_time(sweep):
    groups = group_runs(load_runs([sweep])[0])
    a_runs = groups[("+experiment=cmp", "loss=a")]
    by_frames = learning_curve(a_runs, "frames")
    assert by_frames.x.tolist() == [1000, 2000, 3000, 4000]
    np.testing.assert_allclose(by_frames.mean, [102.5, 205.0, 512.5, 410.0])
    assert np.all(by_frames.low <= by_frames.mean) and np.all(by_frames.mean <= by_frames.high)
    by_time = learning_curve(a_runs, "time")
    # Starts at the slowest run's first evaluation (1000 frames / 400 fps = 2.5 s); there the runs interpolate to
    # 25, 56.25, 109.375, 137.5, 375. It ends at that run's last (10 s), the others holding their final return.
    assert by_time.x[0] == 2.5 and by_time.x[-1] == 10.0
    assert by_time.mean[0] == pytest.approx(140.625) and by_time.mean[-1] == pytest.approx(410.0)
    with pytest.raises(ValueError):
        learning_curve(a_runs, "steps")


def test_metrics_file_with_a_partial_last_line_or_a_corrupt_line(tmp_path):
    rows = metrics_rows(80.0, 100.0)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    write_run(tmp_path / "cut", [], 0, None, experiment="solo")
    (tmp_path / "cut" / "metrics.jsonl").write_text(text + '{"frames": 45')
    write_run(tmp_path / "bad", [], 0, None, experiment="solo")
    (tmp_path / "bad" / "metrics.jsonl").write_text("not json\n" + text)
    runs, skipped = load_runs([tmp_path])
    assert [run.config for run in runs] == [("solo",)] and runs[0].eval_returns[-1] == 80.0
    assert [path.name for path, _ in skipped] == ["bad"] and "metrics.jsonl:1 is not JSON" in skipped[0][1]


WANDB_SCRIPT = """
import sys, wandb
run = wandb.init(project="cmp", dir=sys.argv[1], mode="offline")
run.define_metric("frames"); run.define_metric("*", step_metric="frames")
for frames, seconds, ret in ((1000, 2.0, None), (2000, 4.0, 120.0), (3000, 6.0, None), (4000, 8.0, 90.0)):
    row = {"frames": frames, "train/seconds": seconds}
    run.log(row if ret is None else {**row, "eval/episode_return": ret})
run.finish()
"""


@pytest.mark.e2e
def test_run_without_metrics_file_is_read_from_its_wandb_offline_run(tmp_path):
    run_dir = write_run(tmp_path / "job", ["loss=w", "seed=0"], 0, None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"WANDB_SILENT": "true", "NETRC": str(tmp_path / "no-netrc")}
    subprocess.run([sys.executable, "-c", WANDB_SCRIPT, str(run_dir)], check=True, env=env, timeout=120)
    assert not (run_dir / "metrics.jsonl").exists()
    (run,), skipped = load_runs([tmp_path])
    assert skipped == [] and run.config == ("loss=w",)
    assert run.eval_frames.tolist() == [2000, 4000] and run.eval_returns.tolist() == [120.0, 90.0]
    assert run.eval_seconds.tolist() == [4.0, 8.0] and (run.frames, run.seconds) == (4000, 8.0)


# --- command line -------------------------------------------------------------------------------------------

def test_cli_prints_table_and_writes_csv_and_markdown(sweep, tmp_path, capsys):
    csv_path, md_path = tmp_path / "out.csv", tmp_path / "out.md"
    assert main([str(sweep), "--threshold", "300", "--csv", str(csv_path), "--markdown", str(md_path)]) == 0
    out, err = capsys.readouterr()
    assert "skipped" in err and "stopped at 2000 of 4000 frames" in err
    assert "All runs: +experiment=cmp" in out
    table = {line.split()[0]: line for line in out.splitlines() if line.startswith("loss=")}
    assert table["loss=a"].split()[1] == "5" and "410.0 [" in table["loss=a"] and "512.5 [" in table["loss=a"]
    assert table["loss=a"].split()[-4:] == ["3/5", "3,000", "6.0", "500"]
    assert table["loss=b"].split()[-4:] == ["0/3", "-", "-", "1,000"]

    with csv_path.open() as file:
        rows = {row["config"]: row for row in csv.DictReader(file)}
    a, b = rows["loss=a"], rows["loss=b"]
    assert a["overrides"] == "+experiment=cmp,loss=a" and a["seeds"] == "5"
    assert float(a["final_mean"]) == pytest.approx(410.0) and float(a["best_mean"]) == pytest.approx(512.5)
    assert float(a["final_ci_low"]) < 410.0 < float(a["final_ci_high"])
    assert float(a["final_iqm"]) == pytest.approx(320.0) and float(b["final_iqm"]) == pytest.approx(25.0)
    assert (a["threshold"], a["reached"], a["frames_to_threshold"]) == ("300.0", "3", "3000.0")
    assert float(a["seconds_to_threshold"]) == pytest.approx(6.0) and float(a["fps"]) == pytest.approx(500.0)
    assert (b["reached"], b["frames_to_threshold"], b["seconds_to_threshold"]) == ("0", "inf", "inf")

    lines = md_path.read_text().splitlines()
    assert lines[0] == ("| config | seeds | final return [95% CI] | best return [95% CI] | final IQM | reached 300 "
                        "| frames to 300 | seconds to 300 | FPS |")
    assert lines[1] == "|:---|---:|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2].startswith("| loss=a | 5 | 410.0 [") and lines[2].endswith(" | 320.0 | 3/5 | 3,000 | 6.0 | 500 |")
    assert lines[3].startswith("| loss=b | 3 | 30.0 [10.0, 60.0] | 37.5 [12.5, 75.0] | 25.0 | 0/3 | - | - |")


def test_cli_writes_a_png_curve_figure(sweep, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for axis in ("frames", "time"):
        png = tmp_path / f"curves-{axis}.png"
        assert main([str(sweep), "--plot", str(png), "--x", axis, "--threshold", "300"]) == 0
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        assert struct.unpack(">II", data[16:24]) == (770, 462)  # 7 x 4.2 inches at 110 dpi


@pytest.mark.e2e
def test_module_prints_markdown_without_importing_matplotlib(sweep):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "rlexp.compare", str(sweep), "--markdown"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| config | seeds |") and "| loss=b | 3 | 30.0 [10.0, 60.0] |" in result.stdout
    assert "matplotlib" not in result.stderr  # -X importtime lists every imported module on stderr


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "no runs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--markdown", str(tmp_path), str(tmp_path)])
