"""harness publish: a static site of many runs, with relative links only.

The runs (the `published_runs` fixture of tests/integration/conftest.py): the real quick run, two
runs derived from it (an older one, and a newer one on another host whose verdict flipped), a
synthetic run of a second claim with a sweep whose conditions disagree, and a folder that is
not a whole run.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.results import publish
from tests.builders import CLAIM, TEMPLATES, run_harness

SVG = "{http://www.w3.org/2000/svg}"


class Links(HTMLParser):
    """Every href and src of a page, every element's tag, and the classes of td cells."""

    def __init__(self):
        super().__init__()
        self.targets, self.tags, self.cells = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.targets += [attrs[name] for name in ("href", "src") if attrs.get(name)]
        if tag == "td" and "cell" in (attrs.get("class") or "").split():
            self.cells.append(attrs["class"])


def parsed(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text())
    return links


def test_the_site_holds_every_page(site, published_runs):
    root = site.path
    runs = published_runs
    assert [run.run_id for run in site.runs] == [
        runs["other_host"].name,
        runs["real"].name,
        "synthetic-20260101",
        runs["older"].name,
    ]  # newest first
    for run in site.runs:
        for name in ("verdicts.json", "manifest.json", "measurements.csv"):
            assert (root / "runs" / run.run_id / name).is_file(), (run.run_id, name)
        # Reports are copied; the synthetic run has none and is linked by its verdicts.json.
        assert (root / "runs" / run.run_id / "index.html").is_file() == (run.run_id != "synthetic-20260101")
    assert site.claims == (CLAIM, "synthetic")
    assert all((root / "claims" / f"{claim}.html").is_file() for claim in site.claims)
    sha = json.loads((runs["real"] / "manifest.json").read_text())["experiment"]["sha256"]
    assert site.comparisons == (f"compare/{CLAIM}-{sha[:8]}/index.html",)
    assert (root / site.comparisons[0]).is_file() and (root / site.comparisons[0]).with_name("compare.json").is_file()
    (skipped,) = site.skipped
    assert skipped[0].endswith("broken") and "no verdicts.json" in skipped[1]


def test_site_json_is_the_index_data(site, published_runs):
    data = json.loads((site.path / "site.json").read_text())
    assert data["kind"] == "harness site" and data["format_version"] == 1
    by_id = {run["run_id"]: run for run in data["runs"]}
    other = by_id[published_runs["other_host"].name]
    assert other["host"] == "otherhost" and other["overall_verdict"] == "reversed"
    assert by_id["synthetic-20260101"]["overall_verdict"] == "mixed"
    assert [v["condition_label"] for v in by_id["synthetic-20260101"]["verdicts"]] == [
        "connections=1",
        "connections=64",
    ]
    for run in data["runs"]:
        for key in ("landing", "verdicts_json", "manifest_json"):
            assert (site.path / run[key]).is_file()
    assert by_id["synthetic-20260101"]["report"] is None
    assert by_id["synthetic-20260101"]["landing"] == "runs/synthetic-20260101/verdicts.json"
    (comparison,) = data["comparisons"]
    runs = published_runs
    assert comparison["runs"] == [runs["older"].name, runs["real"].name, runs["other_host"].name]  # oldest first


def test_the_index_is_a_matrix_of_runs_and_claims(site):
    page = parsed(site.path / "index.html")
    # One row per run, one column per claim: each run fills its claim's cell and leaves the other empty.
    assert len(page.cells) == len(site.runs) * len(site.claims)
    filled = [cell for cell in page.cells if cell != "cell none"]
    assert sorted(filled) == sorted(f"cell {publish.overall_verdict(run).replace(' ', '-')}" for run in site.runs)
    text = (site.path / "index.html").read_text()
    # The synthetic run's two conditions disagree: 2x reproduced at connections=1, none at 64.
    assert text.count('class="badge reproduced"') >= 1 and text.count('class="badge no-effect"') >= 1
    assert "no verdicts.json" in text  # the skipped folder is listed
    assert text.count("no report") == 1  # the synthetic run


def test_every_link_resolves_and_nothing_comes_from_elsewhere(site):
    pages = sorted(site.path.rglob("*.html"))
    assert len(pages) == 1 + 3 + 2 + 1  # the index, 3 run reports (not the synthetic run), 2 claims, 1 compare
    for page in pages:
        found = parsed(page)
        assert "script" not in found.tags, page
        for target in found.targets:
            assert not re.match(r"^(https?:)?//", target), (page, target)
            if target.startswith(("#", "data:")):
                continue
            assert (page.parent / target.split("#")[0]).resolve().exists(), (page, target)


def test_the_claim_page_draws_every_run_and_host(site, published_runs):
    page = (site.path / "claims" / f"{CLAIM}.html").read_text()
    svg = ElementTree.fromstring(page[page.index("<svg") : page.index("</svg>") + 6])
    points = [group for group in svg.iter() if re.fullmatch(r"claim-point-\d+", group.get("id", ""))]
    assert len(points) == 3 and all(point.findall(f".//{SVG}use") for point in points)
    latest = page[page.index('id="latest"') : page.index("</table>", page.index('id="latest"'))]
    assert latest.count("<tr>") == 3  # a header and one row per host: vm and otherhost
    assert "otherhost" in latest and published_runs["older"].name not in latest


def test_publishing_again_replaces_the_site(published_runs, tmp_path):
    reports = tmp_path / "reports"
    shutil.copytree(published_runs["real"].parent, reports)
    site_dir = reports / "site"  # inside the reports: its copies of the runs are not runs
    first = publish.build_site(reports, site_dir, TEMPLATES)
    shutil.rmtree(reports / published_runs["older"].name)
    second = publish.build_site(reports, site_dir, TEMPLATES)
    assert len(second.runs) == len(first.runs) - 1 and second.skipped == first.skipped
    assert not (site_dir / "runs" / published_runs["older"].name).exists()
    assert [path.name for path in reports.iterdir() if path.name.startswith(".")] == []  # no staging left


def test_publish_refuses_a_folder_it_did_not_build(published_runs, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(HarnessError, match="is not a site `harness publish` built"):
        publish.build_site(published_runs["real"].parent, tmp_path / "notes", TEMPLATES)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    with pytest.raises(HarnessError, match="holds the runs"):
        publish.build_site(published_runs["real"].parent, published_runs["real"].parent.parent, TEMPLATES)
    with pytest.raises(HarnessError, match="holds no run directory"):
        publish.build_site(tmp_path / "notes", tmp_path / "site", TEMPLATES)


def test_cli_publish(published_runs, tmp_path):
    result = run_harness("publish", published_runs["real"].parent, "--out", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "4 runs, 2 claims, 1 compare pages",
        f"site: {tmp_path / 'site' / 'index.html'}",
    ]
    (skipped,) = result.stderr.splitlines()
    assert skipped == (
        f"skipped: {published_runs['real'].parent / 'broken'}: no verdicts.json; "
        "the run wrote no verdicts; it cannot be compared"
    )
    missing = run_harness("publish", tmp_path / "absent", "--out", tmp_path / "other")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'absent'}: no such directory of runs"
    assert run_harness("publish", published_runs["real"].parent).returncode == 2  # --out is required


def test_a_copy_of_a_run_is_published_once(published_runs, tmp_path):
    older = published_runs["older"]
    reports = tmp_path / "reports"
    shutil.copytree(older, reports / "a" / older.name)
    shutil.copytree(older, reports / "b" / older.name)
    found, skipped = publish.find_runs(reports)
    assert [run.path for run in found] == [reports / "a" / older.name]
    assert skipped == [
        (
            str(reports / "b" / older.name),
            f"{reports / 'b' / older.name}: run {older.name} is also in {reports / 'a' / older.name}",
        )
    ]
