"""harness compare on synthetic run directories, and the progress display of harness run.

The significance test is checked on synthetic frames whose answer is known; run directories
are written by tests/builders.py. tests/integration/test_compare_real_run.py compares runs
derived from a real quick run, and checks the progress lines that run printed.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from harness.cli_progress import ProgressDisplay
from harness.errors import HarnessError
from harness.results import analyse, compare, store
from tests.builders import frame, swept, write_run

# --- progress -----------------------------------------------------------------------------------


def test_progress_on_a_terminal_shows_stage_trial_variant_and_time_left():
    screen = io.StringIO()
    now = [0.0]
    display = ProgressDisplay(
        Console(file=screen, force_terminal=True, width=160, color_system=None), clock=lambda: now[0]
    )
    with display:
        display.update("stage", {"text": "provisioning"})
        display.update("trials", {"total": 8})
        for index in range(3):
            display.update("trial_start", {"index": index, "variant": "epoll", "condition": "connections=[64]"})
            now[0] += 10
            display.update(
                "trial", {"index": index, "variant": "epoll", "condition": "connections=[64]", "seconds": 0.25}
            )
        display.update("stage", {"text": "restoring host settings"})
    text = screen.getvalue()
    assert "· provisioning" in text
    assert "trial 3 of 8: epoll [connections=[64]]" in text  # the trial running; brackets are not markup
    assert "trial 3 of 8 done: epoll [connections=[64]] 0.25 s" in text
    assert "3/8" in text and "about 50 s left" in text  # 30 s for 3 trials, 5 to go
    assert "restoring host settings" in text.rsplit("\r", 1)[-1]  # the bar names the stage after the trials


# --- the significance of a difference, on frames with a known answer --------------------------------


def test_a_clearly_different_ratio_is_significant():
    rng = np.random.default_rng(5)
    found = analyse.ratio_difference(frame(rng, 2.0), frame(rng, 1.5), "base", "treat", "lower")
    assert found.significant is True
    assert found.low < found.ratio < found.high < 1
    assert found.ratio == pytest.approx(0.75, rel=0.05)
    assert found.p_value < 0.001


def test_the_same_frame_twice_is_no_difference():
    values = frame(np.random.default_rng(6), 2.0)
    found = analyse.ratio_difference(values, values, "base", "treat", "lower")
    assert found.ratio == pytest.approx(1.0)
    assert found.low < 1 < found.high
    assert found.p_value == pytest.approx(1.0)
    assert found.significant is False


def test_the_direction_follows_better():
    rng = np.random.default_rng(7)
    seconds = {"reference": frame(rng, 2.0), "other": frame(rng, 4.0)}
    # The same trials as requests per second, where higher is better: the same answer.
    rates = {name: values.assign(value=1 / values["value"]) for name, values in seconds.items()}
    in_seconds = analyse.ratio_difference(seconds["reference"], seconds["other"], "base", "treat", "lower")
    in_rates = analyse.ratio_difference(rates["reference"], rates["other"], "base", "treat", "higher")
    assert in_seconds.significant is True and in_rates.significant is True
    assert in_seconds.ratio == pytest.approx(2.0, rel=0.05)
    assert in_rates.ratio == pytest.approx(2.0, rel=0.05)


def test_a_run_with_one_run_mean_cannot_tell():
    rng = np.random.default_rng(8)
    found = analyse.ratio_difference(frame(rng, 2.0), frame(rng, 1.0, runs=1), "base", "treat", "lower")
    assert found.significant is None and found.ratio is None
    assert "other run has fewer than two run means" in found.reason


def test_runs_of_one_distribution_differ_significantly_about_one_time_in_twenty():
    """The level holds with few runs: A/A pairs of 5 runs each, 200 of them."""
    rng = np.random.default_rng(9)
    thresholds = analyse.Thresholds(resamples=1000)
    found = [
        analyse.ratio_difference(
            frame(rng, 2.0, runs=5), frame(rng, 2.0, runs=5), "base", "treat", "lower", thresholds
        ).significant
        for _ in range(200)
    ]
    assert 0.01 <= sum(found) / len(found) <= 0.09, sum(found)


# --- comparing run directories ---------------------------------------------------------------


def test_rows_are_keyed_by_claim_pair_and_condition(tmp_path):
    rng = np.random.default_rng(10)
    same = frame(rng, 2.0)  # one condition measured identically in both runs
    first = write_run(tmp_path / "first", swept({"connections=1": same, "connections=64": frame(rng, 2.0)}))
    second = write_run(
        tmp_path / "second",
        swept({"connections=1": same, "connections=64": frame(rng, 1.0), "connections=512": frame(rng, 2.0)}),
    )
    comparison = compare.compare_runs([store.load_run(first), store.load_run(second)])
    rows = {row.condition: row for row in comparison.rows}
    assert list(rows) == ["connections=1", "connections=64", "connections=512"]
    assert rows["connections=64"].cells[1].flipped and rows["connections=64"].significant
    assert not rows["connections=1"].flipped and not rows["connections=1"].significant
    assert rows["connections=1"].cells[1].difference.ratio == pytest.approx(1.0)
    assert rows["connections=512"].cells[0] is None  # not in the reference run: nothing to compare with
    assert rows["connections=512"].cells[1].difference is None


def test_runs_without_a_sweep_old_and_new_line_up(tmp_path):
    rng = np.random.default_rng(11)
    old = write_run(tmp_path / "old", frame(rng, 2.0).assign(condition=""), with_condition_column=False)
    new = write_run(tmp_path / "new", frame(rng, 1.0).assign(condition=""))
    (row,) = compare.compare_runs([store.load_run(old), store.load_run(new)]).rows
    assert row.condition == "" and row.cells[1].flipped and row.cells[1].difference.significant


def test_runs_of_different_experiment_files_are_refused(tmp_path):
    rng = np.random.default_rng(12)
    runs = [
        store.load_run(write_run(tmp_path / "one", frame(rng, 2.0).assign(condition=""), sha256="a" * 64)),
        store.load_run(write_run(tmp_path / "two", frame(rng, 2.0).assign(condition=""), sha256="b" * 64)),
    ]
    with pytest.raises(HarnessError, match="different experiment definitions.*--allow-different"):
        compare.compare_runs(runs)
    assert compare.compare_runs(runs, allow_different=True).same_experiment is False


def test_a_run_given_twice_or_alone_is_refused(tmp_path):
    run = store.load_run(write_run(tmp_path / "one", frame(np.random.default_rng(13), 2.0).assign(condition="")))
    with pytest.raises(HarnessError, match="given twice"):
        compare.compare_runs([run, run])
    with pytest.raises(HarnessError, match="at least two"):
        compare.compare_runs([run])


def test_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(HarnessError, match=r"no manifest.json; is this a run directory\?"):
        store.load_run(tmp_path)


def test_a_run_whose_trials_never_completed(tmp_path):
    rng = np.random.default_rng(14)
    whole = write_run(tmp_path / "whole", frame(rng, 2.0).assign(condition=""))
    empty = write_run(tmp_path / "empty", frame(rng, 2.0).assign(condition=""))
    (empty / "measurements.csv").write_text("")  # the run stopped before its first trial ended
    (row,) = compare.compare_runs([store.load_run(whole), store.load_run(empty)]).rows
    assert row.cells[1].difference.significant is None and "fewer than two run means" in row.cells[1].difference.reason


def test_a_resumed_run_counts_its_earlier_trials_but_times_only_its_own():
    screen = io.StringIO()
    now = [0.0]
    display = ProgressDisplay(Console(file=screen, width=160), clock=lambda: now[0])  # not a terminal
    with display:
        display.update("trials", {"total": 10, "done": 6})
        now[0] += 20
        display.update("trial", {"index": 6, "variant": "epoll", "condition": "", "seconds": 0.5})
    assert screen.getvalue() == "trial 7: epoll 0.5 s (7 of 10, about 1 min 00 s left)\n"
