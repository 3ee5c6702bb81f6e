"""harness compare, and the progress lines of harness run.

One real quick run of a smaller known-effect experiment (quick_run, shared on disk with
test_publish and test_browser within a pytest session) gives a real run directory and the
progress lines `harness run` prints when stderr is not a terminal; derived_run makes a
second run from it with known changes. The significance test is checked on synthetic
frames whose answer is known.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import xml.etree.ElementTree as ElementTree
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from harness.results import analyse, store
from harness.results.verdicts import compare_pair

from harness.results import compare
from harness.cli import _ProgressDisplay
from harness.errors import HarnessError
from tests.conftest import ROOT, run_harness

SVG = "{http://www.w3.org/2000/svg}"
CLAIM = "calibration_known_effect"


# --- shared real run (also used by test_publish.py and test_browser.py) -----------------------


@dataclass(frozen=True)
class QuickRun:
    run_dir: Path
    returncode: int
    stdout: str
    stderr: str


# The known-effect calibration, smaller: 14M rounds (~20 ms) per request instead of 210M, 4
# repetitions, its own ports. Each edit must apply, so a change to the original fails here.
_SMALLER = {
    "iterations: 210000000": "iterations: 14000000",
    "half_iterations: 105000000": "half_iterations: 7000000",
    "port: 18111": "port: 18711",
    "port: 18112": "port: 18712",
    "  repetitions: 12": "  repetitions: 4",
}


def quick_run(tmp_path_factory) -> QuickRun:
    """The real run, made once per pytest session: later callers find it on disk."""
    base = tmp_path_factory.getbasetemp() / "compare-quick-run"
    done = base / "result.json"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        source = ROOT / "experiments" / "calibration"
        shutil.copytree(source / "work", base / "work")  # symlinks into the catalog become files
        text = (source / "known_effect.yaml").read_text()
        for old, new in _SMALLER.items():
            assert old in text, old
            text = text.replace(old, new)
        (base / "small.yaml").write_text(text)
        result = run_harness("run", base / "small.yaml", "--quick", "--out", base / "out", timeout=300)
        done.write_text(json.dumps({"returncode": result.returncode, "stdout": result.stdout,
                                    "stderr": result.stderr}))
    recorded = json.loads(done.read_text())
    run_dirs = sorted((base / "out").iterdir()) if (base / "out").exists() else []
    assert recorded["returncode"] == 0 and len(run_dirs) == 1, recorded["stderr"]
    return QuickRun(run_dirs[0], recorded["returncode"], recorded["stdout"], recorded["stderr"])


def derived_run(source: Path, parent: Path, suffix: str, *, ratio: float | None = None, kernel: str | None = None,
                hostname: str | None = None, cpu_restriction=None, sha256: str | None = None,
                started: str | None = None) -> Path:
    """A copy of a run directory with known changes. With `ratio`, every value is replaced by a
    clean one (3% noise, seeded) whose baseline/treatment ratio is `ratio`, so that the verdict
    is known whatever the shared machine did to the real run; the verdicts are recomputed the
    way the pipeline computes them. Also: host facts, CPU restriction, experiment hash, start time."""
    target = parent / f"{source.name}-{suffix}"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("ansible"))
    values = pd.read_csv(target / "measurements.csv", dtype={"condition": str}, keep_default_na=False,
                         na_values=[""])
    values["condition"] = values["condition"].fillna("") if "condition" in values else ""
    verdicts = json.loads((target / "verdicts.json").read_text())
    for entry in verdicts:
        baseline, treatment = entry["pair"]
        chosen = values["condition"] == entry.get("condition_label", "")
        if ratio is not None:
            noise = np.exp(np.random.default_rng(zlib.crc32(suffix.encode())).normal(0, 0.03, len(values)))
            for variant, mean in ((baseline, 0.03), (treatment, 0.03 / ratio)):
                rows = chosen & (values["variant"] == variant)
                values.loc[rows, "value"] = mean * noise[rows.to_numpy()]
        verdict = compare_pair(values[chosen], pair=entry["pair_name"], baseline=baseline,
                                       treatment=treatment, claimed_ratio=entry["claimed_ratio"], better="lower")
        entry.update({key: getattr(verdict, key) for key in
                      ("measured_ratio", "ci_low", "ci_high", "verdict", "rule", "reason", "half_width")})
    values.to_csv(target / "measurements.csv", index=False)
    (target / "verdicts.json").write_text(json.dumps(verdicts, indent=2))
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["run_id"] = target.name
    if started:
        manifest["started"] = started
    for facts in manifest["hosts"]["facts"].values():
        facts["kernel"] = kernel or facts["kernel"]
        facts["hostname"] = hostname or facts["hostname"]
    if cpu_restriction is not None:
        manifest["hosts"]["cpu_restriction"] = cpu_restriction  # a string, as `harness run --cpus` records it
    if sha256:
        manifest["experiment"]["sha256"] = sha256
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    summary_file = target / "summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        summary["verdict"] = verdicts[0]["verdict"] if len({v["verdict"] for v in verdicts}) == 1 else "mixed"
        summary_file.write_text(json.dumps(summary))
    return target


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return quick_run(tmp_path_factory)


@pytest.fixture(scope="module")
def clean(real, tmp_path_factory):
    """The real run's files with clean numbers: treatment 2x faster, "reproduced"."""
    return derived_run(real.run_dir, tmp_path_factory.mktemp("derived"), "clean", ratio=2.0)


@pytest.fixture(scope="module")
def slower_treatment(real, tmp_path_factory):
    """The same on "another kernel" with a CPU restriction, the treatment 1.5x slower instead
    of 2x faster: the verdict flips to "not reproduced" and the ratio is 3x lower."""
    return derived_run(real.run_dir, tmp_path_factory.mktemp("derived"), "slower", ratio=2 / 3,
                       kernel="6.1.0-test", cpu_restriction="0",
                       started="2099-01-01T00:00:00+00:00")


# --- progress -----------------------------------------------------------------------------------

TRIAL_LINE = re.compile(r"^trial (\d+): (full_work|half_work) [0-9.e+-]+ s \((\d+) of 8, about (.+) left\)$")


def test_run_prints_plain_progress_lines_when_not_on_a_terminal(real):
    lines = real.stderr.splitlines()
    stages = [line for line in lines if line.startswith("· ")]
    assert stages[:3] == ["· checking localhost", "· recording host settings (ansible: snapshot)",
                          "· provisioning: packages, builds, data, sysctls (ansible)"], lines
    assert stages[-1] == "· analysing and writing the report"
    trials = [TRIAL_LINE.match(line) for line in lines if line.startswith("trial ")]
    assert len(trials) == 8 and all(trials), lines
    assert [int(match.group(1)) for match in trials] == list(range(1, 9))
    assert [int(match.group(3)) for match in trials] == list(range(1, 9))
    assert {match.group(2) for match in trials} == {"full_work", "half_work"}
    assert trials[-1].group(4) == "0 s"
    # The estimate is a duration in the display's format.
    assert all(re.fullmatch(r"\d+ s|\d+ min \d\d s", match.group(4)) for match in trials)
    # No bar, no cursor control: a log file stays readable.
    assert "━" not in real.stderr and "\x1b" not in real.stderr
    assert real.stdout.splitlines()[-1] == f"report: {real.run_dir / 'index.html'}"


def test_progress_on_a_terminal_shows_stage_trial_variant_and_time_left():
    screen = io.StringIO()
    now = [0.0]
    display = _ProgressDisplay(Console(file=screen, force_terminal=True, width=160, color_system=None),
                               clock=lambda: now[0])
    with display:
        display.update("stage", {"text": "provisioning"})
        display.update("trials", {"total": 8})
        for index in range(3):
            display.update("trial_start", {"index": index, "variant": "epoll", "condition": "connections=[64]"})
            now[0] += 10
            display.update("trial", {"index": index, "variant": "epoll", "condition": "connections=[64]",
                                     "seconds": 0.25})
        display.update("stage", {"text": "restoring host settings"})
    text = screen.getvalue()
    assert "· provisioning" in text
    assert "trial 3 of 8: epoll [connections=[64]]" in text  # the trial running; brackets are not markup
    assert "trial 3 of 8 done: epoll [connections=[64]] 0.25 s" in text
    assert "3/8" in text and "about 50 s left" in text  # 30 s for 3 trials, 5 to go
    assert "restoring host settings" in text.rsplit("\r", 1)[-1]  # the bar names the stage after the trials


# --- the significance of a difference, on frames with a known answer --------------------------------


def frame(rng, ratio: float, runs: int = 8, noise: float = 0.05, values_per_run: int = 3) -> pd.DataFrame:
    """Seconds per request: baseline `ratio` x the treatment's, lognormal noise per value."""
    rows = [(variant, run, mean * np.exp(rng.normal(0, noise)))
            for variant, mean in (("base", ratio), ("treat", 1.0)) for run in range(runs)
            for _ in range(values_per_run)]
    return pd.DataFrame(rows, columns=["variant", "run", "value"])


def test_a_clearly_different_ratio_is_significant():
    rng = np.random.default_rng(5)
    found = compare.ratio_difference(frame(rng, 2.0), frame(rng, 1.5), "base", "treat", "lower")
    assert found.significant is True
    assert found.low < found.ratio < found.high < 1
    assert found.ratio == pytest.approx(0.75, rel=0.05)
    assert found.p_value < 0.001


def test_the_same_frame_twice_is_no_difference():
    values = frame(np.random.default_rng(6), 2.0)
    found = compare.ratio_difference(values, values, "base", "treat", "lower")
    assert found.ratio == pytest.approx(1.0)
    assert found.low < 1 < found.high
    assert found.p_value == pytest.approx(1.0)
    assert found.significant is False


def test_the_direction_follows_better():
    rng = np.random.default_rng(7)
    seconds = {"reference": frame(rng, 2.0), "other": frame(rng, 4.0)}
    # The same trials as requests per second, where higher is better: the same answer.
    rates = {name: values.assign(value=1 / values["value"]) for name, values in seconds.items()}
    in_seconds = compare.ratio_difference(seconds["reference"], seconds["other"], "base", "treat", "lower")
    in_rates = compare.ratio_difference(rates["reference"], rates["other"], "base", "treat", "higher")
    assert in_seconds.significant is True and in_rates.significant is True
    assert in_seconds.ratio == pytest.approx(2.0, rel=0.05)
    assert in_rates.ratio == pytest.approx(2.0, rel=0.05)


def test_a_run_with_one_run_mean_cannot_tell():
    rng = np.random.default_rng(8)
    found = compare.ratio_difference(frame(rng, 2.0), frame(rng, 1.0, runs=1), "base", "treat", "lower")
    assert found.significant is None and found.ratio is None
    assert "other run has fewer than two run means" in found.reason


def test_runs_of_one_distribution_differ_significantly_about_one_time_in_twenty():
    """The level holds with few runs: A/A pairs of 5 runs each, 200 of them."""
    rng = np.random.default_rng(9)
    thresholds = analyse.Thresholds(resamples=1000)
    found = [compare.ratio_difference(frame(rng, 2.0, runs=5), frame(rng, 2.0, runs=5), "base", "treat", "lower",
                                      thresholds).significant for _ in range(200)]
    assert 0.01 <= sum(found) / len(found) <= 0.09, sum(found)


# --- comparing run directories ---------------------------------------------------------------


def write_run(path: Path, values: pd.DataFrame, *, sha256: str = "a" * 64, run_id: str | None = None,
              pairs=(("p", "base", "treat"),), with_condition_column: bool = True) -> Path:
    """A run directory as the pipeline writes it, from a values frame with a condition column."""
    path.mkdir(parents=True)
    verdicts = []
    for label in dict.fromkeys(values["condition"]):
        own = values[values["condition"] == label]
        for name, baseline, treatment in pairs:
            verdict = compare_pair(own, pair=name, baseline=baseline, treatment=treatment,
                                           claimed_ratio=2.0, better="lower")
            verdicts.append({"claim_id": "synthetic", "pair_name": name, "pair": [baseline, treatment],
                             "condition": dict(part.split("=") for part in label.split(", ")) if label else {},
                             "condition_label": label, **{key: getattr(verdict, key) for key in (
                                 "claimed_ratio", "measured_ratio", "ci_low", "ci_high", "confidence", "verdict",
                                 "rule", "reason", "n_baseline", "n_treatment")}})
    if not with_condition_column:
        values = values.drop(columns="condition")
        for entry in verdicts:
            del entry["condition"], entry["condition_label"]
    values.to_csv(path / "measurements.csv", index=False)
    (path / "verdicts.json").write_text(json.dumps(verdicts))
    (path / "manifest.json").write_text(json.dumps({
        "format_version": 1, "run_id": run_id or path.name, "status": "complete",
        "started": "2026-01-01T00:00:00+00:00",
        "experiment": {"file": "synthetic.yaml", "sha256": sha256, "claim_id": "synthetic", "quick": True,
                       "parameters": {}},
        "hosts": {"facts": {"h1": {"cpu_model": "Test CPU", "cores": 2, "kernel": "6.1"}}},
    }))
    return path


def swept(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([values.assign(condition=label) for label, values in frames.items()], ignore_index=True)


def test_rows_are_keyed_by_claim_pair_and_condition(tmp_path):
    rng = np.random.default_rng(10)
    same = frame(rng, 2.0)  # one condition measured identically in both runs
    first = write_run(tmp_path / "first", swept({"connections=1": same, "connections=64": frame(rng, 2.0)}))
    second = write_run(tmp_path / "second", swept({"connections=1": same, "connections=64": frame(rng, 1.0),
                                                   "connections=512": frame(rng, 2.0)}))
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
    runs = [store.load_run(write_run(tmp_path / "one", frame(rng, 2.0).assign(condition=""), sha256="a" * 64)),
            store.load_run(write_run(tmp_path / "two", frame(rng, 2.0).assign(condition=""), sha256="b" * 64))]
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


def test_real_runs_show_the_flip_the_difference_and_the_environment(clean, slower_treatment):
    runs = [store.load_run(clean), store.load_run(slower_treatment)]
    comparison = compare.compare_runs(runs)
    (row,) = comparison.rows
    assert (row.claim_id, row.pair_name, row.condition) == (CLAIM, "known_effect", "")
    reference, other = row.cells
    assert reference.verdict == "reproduced" and other.verdict == "not reproduced"
    assert other.flipped and not reference.flipped
    assert other.difference.significant and other.difference.high < 1
    # The difference is the ratio of the two runs' recorded ratios: about (2/3) / 2.
    assert other.difference.ratio == pytest.approx(other.measured_ratio / reference.measured_ratio)
    assert other.difference.ratio == pytest.approx(1 / 3, rel=0.05)
    # Only what derived_run changed differs; the CPU restriction counts as part of the host.
    assert [item.name for item in comparison.differing_environment] == ["server+client: kernel", "CPU restriction"]
    assert comparison.differing_environment[1].values == ("none", "0")
    names = [item.name for item in comparison.environment]
    for expected in ("server+client: cpu_model", "server+client: cores", "server+client: memory_mib",
                     "link server+client -> server+client", "server+client: tool gcc", "package pandas",
                     "experiment sha256", "profile", "server+client: topology cpus",
                     "server+client: setting before /proc/sys/net/core/rps_sock_flow_entries"):
        assert expected in names, expected


def test_the_compare_chart_has_a_point_per_run_and_row(clean, slower_treatment):
    comparison = compare.compare_runs([store.load_run(clean), store.load_run(slower_treatment)])
    svg = ElementTree.fromstring(compare.compare_svg(comparison))
    for run in range(2):
        group = svg.find(f".//*[@id='compare-point-0-{run}']")
        assert group is not None and len(group.findall(f".//{SVG}use")) == 1


def test_cli_compare_writes_the_page_and_the_json(clean, slower_treatment, tmp_path):
    result = run_harness("compare", clean, slower_treatment, "--out", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"{CLAIM} known_effect: run 1: reproduced [12]\.\d\dx  run 2: not reproduced 0\.\d\dx "
                        r"\(flipped\) \(significant difference\)", lines[0]), lines[0]
    assert lines[1].startswith("environment differs in 2 of ") and "server+client: kernel" in lines[1]
    assert lines[-1] == f"compare: {tmp_path / 'cmp' / 'index.html'}"
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert data["reference_run"] == clean.name and data["same_experiment"] is True
    (row,) = data["rows"]
    assert row["flipped"] and row["significant"]
    assert row["cells"][slower_treatment.name]["difference"]["significant"] is True
    assert [item["name"] for item in data["environment_differences"]] == ["server+client: kernel", "CPU restriction"]
    page = (tmp_path / "cmp" / "index.html").read_text()
    # The environment comes first, before the results.
    assert page.index("Environment differences") < page.index("6.1.0-test") < page.index('id="results"')
    assert page.count('class="flipped"') == 1
    for href in re.findall(r'href="([^"#]+)"', page):
        assert href.startswith("data:") or (tmp_path / "cmp" / href).resolve().exists(), href
    assert not re.search(r'\b(?:href|src)="(?:https?:)?//', page)  # nothing fetched from elsewhere


def test_cli_compare_refuses_different_definitions_unless_allowed(clean, tmp_path):
    other = derived_run(clean, tmp_path, "edited", sha256="0" * 64)
    refused = run_harness("compare", clean, other, "--out", tmp_path / "cmp")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: the runs come from different experiment definitions") and "--allow-different" in line
    assert not (tmp_path / "cmp").exists()
    allowed = run_harness("compare", clean, other, "--out", tmp_path / "cmp", "--allow-different")
    assert allowed.returncode == 0, allowed.stderr
    assert "come from different experiment definitions" in (tmp_path / "cmp" / "index.html").read_text()


def test_cli_compare_usage_errors(clean, tmp_path):
    alone = run_harness("compare", clean)
    assert alone.returncode == 2 and "give at least two run directories" in alone.stderr
    missing = run_harness("compare", clean, tmp_path / "absent")
    assert missing.returncode == 1
    assert missing.stderr == f"error: {tmp_path / 'absent'}: no manifest.json; is this a run directory?\n"


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
    display = _ProgressDisplay(Console(file=screen, width=160), clock=lambda: now[0])  # not a terminal
    with display:
        display.update("trials", {"total": 10, "done": 6})
        now[0] += 20
        display.update("trial", {"index": 6, "variant": "epoll", "condition": "", "seconds": 0.5})
    assert screen.getvalue() == "trial 7: epoll 0.5 s (7 of 10, about 1 min 00 s left)\n"
