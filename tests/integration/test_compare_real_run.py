"""harness compare on runs derived from a real quick run, and the progress lines of harness run.

The real run (the `real_run` fixture of tests/integration/conftest.py, made once per session
and shared with test_publish and test_browser) gives a real run directory and the progress
lines `harness run` prints when stderr is not a terminal; derived_run makes runs from it
with known changes.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree

import pytest

from harness.results import compare, store
from tests.builders import CLAIM, derived_run, run_harness

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def clean(real_run, tmp_path_factory):
    """The real run's files with clean numbers: treatment 2x faster, "reproduced"."""
    return derived_run(real_run.run_dir, tmp_path_factory.mktemp("derived"), "clean", ratio=2.0)


@pytest.fixture(scope="module")
def slower_treatment(real_run, tmp_path_factory):
    """The same on "another kernel" with a CPU restriction, the treatment 1.5x slower instead
    of 2x faster: the verdict flips to "reversed" and the ratio is 3x lower."""
    return derived_run(
        real_run.run_dir,
        tmp_path_factory.mktemp("derived"),
        "slower",
        ratio=2 / 3,
        kernel="6.1.0-test",
        cpu_restriction="0",
        started="2099-01-01T00:00:00+00:00",
    )


TRIAL_LINE = re.compile(r"^trial (\d+): (full_work|half_work) [0-9.e+-]+ s \((\d+) of (\d+), about (.+) left\)$")


def test_run_prints_plain_progress_lines_when_not_on_a_terminal(real_run):
    lines = real_run.stderr.splitlines()
    stages = [line for line in lines if line.startswith("· ")]
    assert stages[:3] == [
        "· checking localhost",
        "· recording host settings (ansible: snapshot)",
        "· provisioning: packages, builds, data, sysctls (ansible)",
    ], lines
    assert stages[-1] == "· analysing and writing the report"
    # 8 planned trials, and one more for each that failed a validity gate (CPU steal on this
    # VM) and ran again: its line says so, and the total grows by one.
    failed = [line for line in lines if re.match(r"^trial \d+ failed the .+ gate", line)]
    trials = [TRIAL_LINE.match(line) for line in lines if line.startswith("trial ") and line not in failed]
    ran = len(trials)
    assert all(trials) and 8 <= ran <= 8 + len(failed), lines
    # A rerun is numbered after the planned trials (9, 10, ...) and runs at the end of its round.
    numbers = [int(match.group(1)) for match in trials]
    assert sorted(numbers) == list(range(1, ran + 1))
    assert [number for number in numbers if number <= 8] == list(range(1, 9))
    assert [int(match.group(3)) for match in trials] == list(range(1, ran + 1))
    totals = [int(match.group(4)) for match in trials]
    assert totals[0] == 8 and totals[-1] == ran and totals == sorted(totals)
    assert {match.group(2) for match in trials} == {"full_work", "half_work"}
    assert trials[-1].group(5) == "0 s"
    # The estimate is a duration in the display's format.
    assert all(re.fullmatch(r"\d+ s|\d+ min \d\d s", match.group(5)) for match in trials)
    # No bar, no cursor control: a log file stays readable.
    assert "━" not in real_run.stderr and "\x1b" not in real_run.stderr
    assert real_run.stdout.splitlines()[-1] == f"report: {real_run.run_dir / 'index.html'}"


def test_real_runs_show_the_flip_the_difference_and_the_environment(clean, slower_treatment):
    runs = [store.load_run(clean), store.load_run(slower_treatment)]
    comparison = compare.compare_runs(runs)
    (row,) = comparison.rows
    assert (row.claim_id, row.pair_name, row.condition) == (CLAIM, "known_effect", "")
    reference, other = row.cells
    assert reference.verdict == "reproduced" and other.verdict == "reversed"
    assert other.flipped and not reference.flipped
    assert other.difference.significant and other.difference.high < 1
    # The difference is the ratio of the two runs' recorded ratios: about (2/3) / 2.
    assert other.difference.ratio == pytest.approx(other.measured_ratio / reference.measured_ratio)
    assert other.difference.ratio == pytest.approx(1 / 3, rel=0.05)
    # Only what derived_run changed differs; the CPU restriction counts as part of the host.
    assert [item.name for item in comparison.differing_environment] == ["server+client: kernel", "CPU restriction"]
    assert comparison.differing_environment[1].values == ("none", "0")
    names = [item.name for item in comparison.environment]
    for expected in (
        "server+client: cpu_model",
        "server+client: cores",
        "server+client: memory_mib",
        "link server+client -> server+client",
        "server+client: tool gcc",
        "package pandas",
        "experiment sha256",
        "profile",
        "server+client: topology cpus",
        "server+client: setting before /proc/sys/net/core/rps_sock_flow_entries",
    ):
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
    assert re.fullmatch(
        rf"{CLAIM} known_effect: run 1: reproduced [12]\.\d\dx  run 2: reversed 0\.\d\dx "
        r"\(flipped\) \(significant difference\)",
        lines[0],
    ), lines[0]
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
