"""Many run directories -> one static site.

    SITE/index.html                  every run, newest first: date, host, status, and a
                                     runs x claims matrix of verdicts as coloured cells
    SITE/site.json                   the index's data (and the mark of a site this module built)
    SITE/claims/<claim>.html         one claim across runs and hosts: a chart and a table
    SITE/runs/<run id>/              a copy of each run directory: its report, verdicts,
                                     manifest, measurements, raw files
    SITE/compare/<claim>-<sha8>/     index.html and compare.json: every run of one experiment
                                     definition (file sha256) side by side, oldest first

Links are relative and no page loads anything from elsewhere (no script, no CDN, no web
font), so the site works from file:// and from any static web server. The site is rebuilt
whole each time: written beside SITE under a temporary name, then swapped in.

Pure functions build each page's text from StoredRuns; build_site is the one that touches
the disk.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.results import charts, compare, report, store
from harness.results.store import StoredRun, write_atomically

FORMAT_VERSION = 1
SITE_KIND = "harness site"
SITE_MARK = "site.json"


@dataclass(frozen=True)
class Site:
    path: Path
    runs: tuple[StoredRun, ...]  # newest first
    skipped: tuple[tuple[str, str], ...]  # (path, why)
    claims: tuple[str, ...]
    comparisons: tuple[str, ...]  # hrefs of compare pages, relative to the site


# --- which runs ---------------------------------------------------------------------------


def find_runs(reports_dir: Path, exclude: Path | None = None) -> tuple[list[StoredRun], list[tuple[str, str]]]:
    """Every run directory under reports_dir (a folder with a manifest), newest first, and
    (folder, why) for those that could not be read; `why` names the folder. Folders under
    `exclude` (the site itself) are left out, and a run found twice (a copy) is kept once."""
    exclude = exclude.resolve() if exclude else None
    runs: list[StoredRun] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, Path] = {}
    for directory in store.find_runs(Path(reports_dir)):
        if exclude and directory.resolve().is_relative_to(exclude):
            continue
        try:
            run = store.load_run(directory)
        except HarnessError as error:
            skipped.append((str(directory), str(error)))
            continue
        if run.run_id in seen:
            skipped.append((str(directory), f"{directory}: run {run.run_id} is also in {seen[run.run_id]}"))
            continue
        seen[run.run_id] = directory
        runs.append(run)
    runs.sort(key=lambda run: (run.manifest.started, run.run_id), reverse=True)
    return runs, skipped


def overall_verdict(run: StoredRun) -> str:
    """The run's one verdict: its summary's, else the verdict every pair and condition agree on,
    else "mixed"; "none" when the run has no verdicts."""
    if run.summary and run.summary.verdict:
        return run.summary.verdict
    verdicts = {entry.verdict for entry in run.verdicts}
    if not verdicts:
        return "none"
    return verdicts.pop() if len(verdicts) == 1 else "mixed"


def comparison_groups(runs: Sequence[StoredRun]) -> dict[tuple[str, str], list[StoredRun]]:
    """Runs of one experiment definition (claim and file sha256), oldest first; only groups of two or more."""
    groups: dict[tuple[str, str], list[StoredRun]] = {}
    for run in runs:
        if run.manifest.experiment.sha256:
            groups.setdefault((run.claim_id, run.manifest.experiment.sha256), []).append(run)
    return {
        key: sorted(group, key=lambda run: (run.manifest.started, run.run_id))
        for key, group in sorted(groups.items())
        if len(group) >= 2
    }


def slug(text: str) -> str:
    """A file name from a claim id or run id: letters, digits, '_', '-', '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


def run_href(run: StoredRun, name: str = store.REPORT) -> str:
    return f"runs/{slug(run.run_id)}/{name}"


def report_href(run: StoredRun) -> str | None:
    """The run's report in the site; None for a run directory without one."""
    return run_href(run) if (run.path / store.REPORT).is_file() else None


def landing_href(run: StoredRun) -> str:
    """Where a link to the run goes: its report, else its verdict entries."""
    return report_href(run) or run_href(run, store.VERDICTS)


def compare_href(claim_id: str, sha256: str) -> str:
    return f"compare/{slug(claim_id)}-{sha256[:8]}/index.html"


# --- the index ------------------------------------------------------------------------------


def entries(run: StoredRun) -> list[dict]:
    """The run's verdicts as the site shows them, one per pair and condition."""
    return [
        {
            "pair_name": entry.name,
            "condition_label": entry.label,
            "verdict": entry.verdict or "unknown",
            "claimed_ratio": entry.claimed_ratio,
            "measured_ratio": entry.measured_ratio,
            "ci_low": entry.ci_low,
            "ci_high": entry.ci_high,
            "k": entry.k,
        }
        for entry in run.verdicts
    ]


def site_data(runs: Sequence[StoredRun], skipped: Sequence[tuple[str, str]], built: str) -> dict:
    """site.json: what the index shows, with links to each run's files."""
    groups = comparison_groups(runs)
    return {
        "format_version": FORMAT_VERSION,
        "kind": SITE_KIND,
        "built": built,
        "runs": [
            {
                "run_id": run.run_id,
                "started": run.manifest.started,
                "host": run.host_label,
                "status": run.manifest.shown_status,
                "claim_id": run.claim_id,
                "experiment_file": run.manifest.experiment.file,
                "experiment_sha256": run.manifest.experiment.sha256,
                "overall_verdict": overall_verdict(run),
                "report": report_href(run),
                "landing": landing_href(run),
                "verdicts_json": run_href(run, store.VERDICTS),
                "manifest_json": run_href(run, store.MANIFEST),
                "verdicts": entries(run),
            }
            for run in runs
        ],
        "claims": {claim: f"claims/{slug(claim)}.html" for claim in claim_ids(runs)},
        "comparisons": [
            {
                "claim_id": claim,
                "experiment_sha256": sha,
                "runs": [run.run_id for run in group],
                "page": compare_href(claim, sha),
                "json": compare_href(claim, sha).replace("index.html", "compare.json"),
            }
            for (claim, sha), group in groups.items()
        ],
        "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
    }


def claim_ids(runs: Sequence[StoredRun]) -> list[str]:
    return sorted({run.claim_id for run in runs})


def render_index(data: dict, templates_dir: Path) -> str:
    return report.environment(templates_dir).get_template("site/index.html.j2").render(site=data)


# --- a claim across runs and hosts -----------------------------------------------------------


def claim_points(runs: Sequence[StoredRun], claim_id: str) -> list[dict]:
    """Every verdict of the claim, oldest run first: run, host, series (pair and condition), ratio."""
    points = []
    own = sorted((run for run in runs if run.claim_id == claim_id), key=lambda run: (run.manifest.started, run.run_id))
    for position, run in enumerate(own):
        for entry in entries(run):
            series = entry["pair_name"] + (f" ({entry['condition_label']})" if entry["condition_label"] else "")
            points.append(
                {
                    **entry,
                    "position": position,
                    "run_id": run.run_id,
                    "started": run.manifest.started,
                    "host": run.host_label,
                    "series": series,
                    "report": f"../{report_href(run)}" if report_href(run) else None,
                    "landing": f"../{landing_href(run)}",
                    "verdicts_json": f"../{run_href(run, store.VERDICTS)}",
                }
            )
    return points


def latest_per_host(points: Sequence[dict]) -> list[dict]:
    """Per host, the points of its newest run."""
    newest: dict[str, str] = {}
    for point in points:
        newest[point["host"]] = max(newest.get(point["host"], ""), point["started"] + point["run_id"])
    return [point for point in points if point["started"] + point["run_id"] == newest[point["host"]]]


def claim_svg(points: Sequence[dict], *, id_prefix: str = "claim") -> str:
    """The chart of a claim page (charts.claim_svg): a run per column, labelled with its start
    (to the minute) and host; "" when no point has a measured ratio."""
    run_labels = {point["position"]: f"{report.when(point['started'])[:16]}\n{point['host']}" for point in points}
    return charts.claim_svg(points, run_labels, id_prefix=id_prefix)


def render_claim(claim_id: str, runs: Sequence[StoredRun], templates_dir: Path) -> str:
    points = claim_points(runs, claim_id)
    statement = next(
        (run.summary.statement for run in runs if run.claim_id == claim_id and run.summary and run.summary.statement),
        None,
    )
    comparisons = [
        {"href": f"../{compare_href(claim, sha)}", "runs": len(group), "sha256": sha}
        for (claim, sha), group in comparison_groups(runs).items()
        if claim == claim_id
    ]
    return (
        report.environment(templates_dir)
        .get_template("site/claim.html.j2")
        .render(
            claim_id=claim_id,
            statement=statement,
            points=points,
            latest=latest_per_host(points),
            chart=claim_svg(points),
            comparisons=comparisons,
        )
    )


# --- the whole site ----------------------------------------------------------------------------


def build_site(reports_dir: str | Path, site_dir: str | Path, templates_dir: Path) -> Site:
    """Publish every run under reports_dir as a static site in site_dir (replaced whole)."""
    reports_dir, site_dir = Path(reports_dir), Path(site_dir)
    if not reports_dir.is_dir():
        raise HarnessError(f"{reports_dir}: no such directory of runs")
    _check_site_dir(reports_dir, site_dir)
    runs, skipped = find_runs(reports_dir, exclude=site_dir)
    if not runs and skipped:
        raise HarnessError(f"{reports_dir}: holds no run that can be published: {skipped[0][1]}")
    if not runs:
        raise HarnessError(
            f"{reports_dir}: holds no run directory (a folder with {store.MANIFEST} and {store.VERDICTS}); "
            "run `harness run` first or point at the folder given to its --out"
        )
    built = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=site_dir.parent, prefix=f".{site_dir.name}."))
    try:
        staging.chmod(0o755)
        for run in runs:
            shutil.copytree(run.path, staging / "runs" / slug(run.run_id), ignore=shutil.ignore_patterns(".*"))
        hrefs = []
        for (claim, sha), group in comparison_groups(runs).items():
            href = compare_href(claim, sha)
            comparison = compare.compare_runs(group)
            compare.write_comparison(
                comparison,
                (staging / href).parent,
                templates_dir,
                home_href="../../index.html",
                report_links={run.run_id: f"../../{landing_href(run)}" for run in group},
            )
            hrefs.append(href)
        (staging / "claims").mkdir()
        for claim in claim_ids(runs):
            write_atomically(staging / "claims" / f"{slug(claim)}.html", render_claim(claim, runs, templates_dir))
        data = site_data(runs, skipped, built)
        write_atomically(staging / SITE_MARK, json.dumps(data, indent=2) + "\n")
        write_atomically(staging / "index.html", render_index(data, templates_dir))
        _swap_in(staging, site_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Site(
        path=site_dir, runs=tuple(runs), skipped=tuple(skipped), claims=tuple(claim_ids(runs)), comparisons=tuple(hrefs)
    )


def _check_site_dir(reports_dir: Path, site_dir: Path) -> None:
    """The site may replace only an earlier site: never the runs, nor any other folder."""
    reports, site = reports_dir.resolve(), site_dir.resolve()
    if reports.is_relative_to(site):
        raise HarnessError(f"{site_dir}: holds the runs ({reports_dir}); pick an --out outside REPORTS_DIR's path")
    if not site_dir.exists():
        return
    if not site_dir.is_dir():
        raise HarnessError(f"{site_dir}: exists and is not a directory; pick another --out")
    if not any(site_dir.iterdir()):
        return
    try:
        mark = json.loads((site_dir / SITE_MARK).read_text())
    except (OSError, ValueError):
        mark = None
    if not isinstance(mark, dict) or mark.get("kind") != SITE_KIND:
        raise HarnessError(
            f"{site_dir}: exists and is not a site `harness publish` built (no {SITE_MARK}); "
            "pick another --out or empty it"
        )


def _swap_in(staging: Path, site_dir: Path) -> None:
    old = None
    if site_dir.exists():
        old = Path(tempfile.mkdtemp(dir=site_dir.parent, prefix=f".{site_dir.name}.old."))
        site_dir.rename(old / "site")
    staging.rename(site_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
