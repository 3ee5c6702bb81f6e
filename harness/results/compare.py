"""Runs side by side: per claim, pair and condition, each run's measured ratio, interval and verdict.

The first run given is the reference. Every other run is compared with it: whether its
verdict flipped, and whether its ratio differs from the reference's by more than the two
runs' noise explains (see ratio_difference). The hosts' environments (CPU, cores, memory,
kernel, topology, CPU restriction, links, sysctls, host settings such as IRQ affinity and
RPS, tool and package versions, experiment parameters) are listed with the rows that
differ first, since a flipped verdict on another host is first of all a different host.

Runs of different experiment files (their sha256 differs) measure different things and
are refused unless the caller allows it.

Pure functions over StoredRuns (store.load_run reads a run directory); write_comparison writes the
page and its JSON. Nothing here prints.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.results import charts, report, store
from harness.results.analyse import Difference, Thresholds, ratio_difference
from harness.results.store import StoredRun, VerdictEntry, write_atomically

FORMAT_VERSION = store.FORMAT_VERSION
COMPARE_TEMPLATE = "compare.html.j2"

METHOD = (
    "Each run's ratio has a bootstrap interval of the log ratio from its own run means (the interval "
    "its verdict used). Two runs are independent, so the log of the ratio of their ratios has a "
    "standard error of sqrt(se_a² + se_b²), each se read off its run's interval as half-width / z "
    '(Altman and Bland, BMJ 2003, "Interaction revisited: the difference between two estimates"). '
    "For the few runs a run has, each se is scaled by sqrt(n / (n - 1)) and the test uses Student's t "
    "with Welch-Satterthwaite degrees of freedom (n_baseline + n_treatment - 2 per run). The difference "
    "is significant when the interval of the ratio of ratios, at the verdicts' confidence, excludes 1. "
    "Every run is compared with the first one; with many rows, expect about one in twenty to come out "
    "significant by chance."
)


# --- one run on disk -----------------------------------------------------------------
# A run is read through the typed run format: store.load_run gives a StoredRun whose
# manifest, verdict entries and summary are frozen records.


def better_of(run: StoredRun, entry: VerdictEntry) -> str:
    """Which direction of the metric is better: the entry's own, else the summary's."""
    return entry.better or (run.summary.better if run.summary else "lower")


# --- the environment -------------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentRow:
    name: str
    values: tuple[str | None, ...]  # one per run; None where the run does not record it

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


def fingerprint(run: StoredRun) -> dict[str, str]:
    """The run's environment as flat `name: value` text, in a stable order.

    Hosts are named by their roles ("server+client") rather than inventory names, so that
    runs on different machines line up row by row; the host's names are rows of their own.
    """
    manifest = run.manifest
    hosts = manifest.hosts
    rows: dict[str, str] = {}
    for host, fact in hosts.facts.items():
        label = hosts.role_label(host)
        rows[f"{label}: inventory name"] = host
        for key, value in _flatten(fact or {}):
            rows[f"{label}: {key}"] = value
    for host, topology in hosts.topology.items():
        for key, value in _flatten(topology or {}, "topology"):
            rows[f"{hosts.role_label(host)}: {key}"] = value
    # `harness run --cpus`: fewer CPUs make other hardware
    rows["CPU restriction"] = "none" if hosts.cpu_restriction is None else str(hosts.cpu_restriction)
    for link in hosts.links:
        rows[f"link {hosts.role_label(link.client)} -> {hosts.role_label(link.server)}"] = link.description
    for key, value in _flatten(hosts.sysctls_applied, "sysctl applied"):
        rows[key] = value
    for host, sysctls in hosts.sysctls_before.items():
        for key, value in _flatten(sysctls or {}, "sysctl before"):
            rows[f"{hosts.role_label(host)}: {key}"] = value
    for host, settings in hosts.settings_before.items():
        for key, value in _flatten(settings or {}, "setting before"):
            rows[f"{hosts.role_label(host)}: {key}"] = value
    for host, notes in hosts.state_notes.items():
        rows[f"{hosts.role_label(host)}: state notes"] = "; ".join(map(str, notes or []))
    for host, tools in hosts.tools.items():
        for key, value in _flatten(tools or {}, "tool"):
            rows[f"{hosts.role_label(host)}: {key}"] = value
    if manifest.python.get("version"):
        rows["python"] = str(manifest.python["version"])
    for key, value in _flatten(manifest.python.get("packages") or {}, "package"):
        rows[key] = value
    for key, value in _flatten(manifest.harness, "harness"):
        rows[key] = value
    experiment = manifest.experiment
    rows["experiment file"] = experiment.file
    if experiment.sha256 is not None:
        rows["experiment sha256"] = experiment.sha256
    rows["profile"] = "quick" if experiment.quick else "full"
    for key, value in _flatten(experiment.parameters, "parameter"):
        rows[key] = value
    return rows


def environment_rows(runs: Sequence[StoredRun]) -> list[EnvironmentRow]:
    """Every fingerprint row across the runs, those whose values differ first."""
    prints = [fingerprint(run) for run in runs]
    names = list(dict.fromkeys(name for found in prints for name in found))
    rows = [EnvironmentRow(name, tuple(found.get(name) for found in prints)) for name in names]
    return [row for row in rows if row.differs] + [row for row in rows if not row.differs]


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        found = []
        for key, inner in value.items():
            found += _flatten(inner, f"{prefix} {key}".strip())
        return found
    if isinstance(value, (list, tuple)):
        return [(prefix, ", ".join(map(str, value)))]
    return [(prefix, "" if value is None else str(value))]


# --- the comparison ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run's result for one row."""

    run_id: str
    measured_ratio: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str
    reason: str
    n_baseline: int | None
    n_treatment: int | None
    flipped: bool  # its verdict differs from the reference run's
    difference: Difference | None  # against the reference; None for the reference itself


@dataclass(frozen=True)
class Row:
    claim_id: str
    pair_name: str
    condition: str
    baseline: str
    treatment: str
    claimed_ratio: float | None
    cells: tuple[Cell | None, ...]  # one per run, None where the run has no such row

    @property
    def flipped(self) -> bool:
        return any(cell is not None and cell.flipped for cell in self.cells)

    @property
    def significant(self) -> bool:
        return any(
            cell is not None and cell.difference is not None and cell.difference.significant for cell in self.cells
        )


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started: str
    host: str
    status: str
    claim_id: str
    experiment_file: str
    experiment_sha256: str | None
    path: str


@dataclass(frozen=True)
class Comparison:
    runs: tuple[RunInfo, ...]  # the first is the reference
    environment: tuple[EnvironmentRow, ...]  # differing rows first
    rows: tuple[Row, ...]
    same_experiment: bool
    confidence: float
    method: str = METHOD

    @property
    def differing_environment(self) -> tuple[EnvironmentRow, ...]:
        return tuple(row for row in self.environment if row.differs)


def check_same_experiment(runs: Sequence[StoredRun]) -> str | None:
    """None when every run comes from one experiment file (same sha256), else why not."""
    digests = {run.manifest.experiment.sha256 for run in runs}
    if len(digests) <= 1 and None not in digests:
        return None
    described = "; ".join(
        f"{run.run_id}: {run.manifest.experiment.file or '?'} (sha256 "
        f"{(run.manifest.experiment.sha256 or 'not recorded')[:12]})"
        for run in runs
    )
    return f"the runs come from different experiment definitions ({described})"


def compare_runs(
    runs: Sequence[StoredRun], *, allow_different: bool = False, thresholds: Thresholds = Thresholds()
) -> Comparison:
    """Line the runs up row by row (claim, pair, condition); the first run is the reference."""
    if len(runs) < 2:
        raise HarnessError("compare needs at least two run directories")
    seen: dict[str, Path] = {}
    for run in runs:
        if run.run_id in seen:
            raise HarnessError(f"{run.path}: run {run.run_id} is given twice (also as {seen[run.run_id]})")
        seen[run.run_id] = run.path
    different = check_same_experiment(runs)
    if different and not allow_different:
        raise HarnessError(
            f"{different}: their numbers measure different things; compare runs of one "
            "experiment file, or pass --allow-different to compare them anyway"
        )
    keys: dict[tuple[str, str, str], list[VerdictEntry | None]] = {}
    for position, run in enumerate(runs):
        for entry in run.verdicts:
            keys.setdefault(entry.key, [None] * len(runs))[position] = entry
    rows = tuple(_row(key, entries, runs, thresholds) for key, entries in keys.items())
    return Comparison(
        runs=tuple(_info(run) for run in runs),
        environment=tuple(environment_rows(runs)),
        rows=rows,
        same_experiment=different is None,
        confidence=thresholds.confidence,
    )


def _row(key, entries: list[VerdictEntry | None], runs: Sequence[StoredRun], thresholds: Thresholds) -> Row:
    claim_id, name, condition = key
    first = next(entry for entry in entries if entry is not None)
    baseline, treatment = first.pair
    reference = entries[0]
    cells = []
    for position, (run, entry) in enumerate(zip(runs, entries, strict=True)):
        if entry is None:
            cells.append(None)
            continue
        difference = None
        if position > 0 and reference is not None:
            difference = ratio_difference(
                _condition_values(runs[0], condition),
                _condition_values(run, condition),
                baseline,
                treatment,
                better_of(run, entry),
                thresholds,
            )
        cells.append(
            Cell(
                run_id=run.run_id,
                measured_ratio=entry.measured_ratio,
                ci_low=entry.ci_low,
                ci_high=entry.ci_high,
                verdict=entry.verdict or "unknown",
                reason=entry.reason,
                n_baseline=entry.n_baseline,
                n_treatment=entry.n_treatment,
                flipped=position > 0 and reference is not None and entry.verdict != reference.verdict,
                difference=difference,
            )
        )
    return Row(
        claim_id=claim_id,
        pair_name=name,
        condition=condition,
        baseline=baseline,
        treatment=treatment,
        claimed_ratio=first.claimed_ratio,
        cells=tuple(cells),
    )


def _condition_values(run: StoredRun, condition: str) -> pd.DataFrame:
    return run.values[run.values["condition"] == condition]


def _info(run: StoredRun) -> RunInfo:
    return RunInfo(
        run_id=run.run_id,
        started=run.manifest.started,
        host=run.host_label,
        status=run.manifest.shown_status,
        claim_id=run.claim_id,
        experiment_file=run.manifest.experiment.file,
        experiment_sha256=run.manifest.experiment.sha256,
        path=str(run.path),
    )


def comparison_json(comparison: Comparison) -> dict:
    """The comparison as plain JSON types, cells keyed by run id."""
    ids = [run.run_id for run in comparison.runs]
    return {
        "format_version": FORMAT_VERSION,
        "kind": "comparison",
        "reference_run": ids[0],
        "same_experiment": comparison.same_experiment,
        "confidence": comparison.confidence,
        "method": comparison.method,
        "runs": [asdict(run) for run in comparison.runs],
        "environment_differences": [
            {"name": row.name, "values": dict(zip(ids, row.values, strict=True))}
            for row in comparison.differing_environment
        ],
        "environment": [
            {"name": row.name, "values": dict(zip(ids, row.values, strict=True))} for row in comparison.environment
        ],
        "rows": [
            {
                "claim_id": row.claim_id,
                "pair_name": row.pair_name,
                "condition_label": row.condition,
                "pair": [row.baseline, row.treatment],
                "claimed_ratio": row.claimed_ratio,
                "flipped": row.flipped,
                "significant": row.significant,
                "cells": {
                    run_id: None if cell is None else _plain(asdict(cell))
                    for run_id, cell in zip(ids, row.cells, strict=True)
                },
            }
            for row in comparison.rows
        ],
    }


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- the page ----------------------------------------------------------------------------


def render_compare(
    comparison: Comparison,
    templates_dir: Path,
    report_links: dict[str, str],
    *,
    json_href: str = "compare.json",
    home_href: str | None = None,
) -> str:
    """The compare page. `report_links` maps run id -> href of its report, relative to the page."""
    return (
        report.environment(templates_dir)
        .get_template(COMPARE_TEMPLATE)
        .render(
            comparison=comparison,
            reference=comparison.runs[0],
            report_links=report_links,
            json_href=json_href,
            home_href=home_href,
            chart=compare_svg(comparison),
            flipped=sum(row.flipped for row in comparison.rows),
            significant=sum(row.significant for row in comparison.rows),
        )
    )


def compare_svg(comparison: Comparison, *, id_prefix: str = "compare") -> str:
    """The chart of the compare page (charts.comparison_svg): a row per pair and condition, a
    point per run; "" when no run measured anything."""
    return charts.comparison_svg(
        [
            {
                "label": row.pair_name + (f"\n{row.condition}" if row.condition else ""),
                "claimed_ratio": row.claimed_ratio,
                "cells": [None if cell is None else asdict(cell) for cell in row.cells],
            }
            for row in comparison.rows
        ],
        id_prefix=id_prefix,
    )


def _landing(run_dir: Path) -> Path:
    """A run's report, else (a run directory without one) its verdict entries."""
    report = run_dir.resolve() / store.REPORT
    return report if report.is_file() else run_dir.resolve() / store.VERDICTS


def write_comparison(
    comparison: Comparison,
    out_dir: Path,
    templates_dir: Path,
    home_href: str | None = None,
    report_links: dict[str, str] | None = None,
) -> Path:
    """index.html and compare.json in out_dir; report links relative to it unless given. Returns the page."""
    out_dir = Path(out_dir)
    if store.is_run_directory(out_dir):
        raise HarnessError(f"{out_dir}: is a run directory; pick another --out for the comparison")
    out_dir.mkdir(parents=True, exist_ok=True)
    if report_links is None:
        report_links = {
            run.run_id: Path(os.path.relpath(_landing(Path(run.path)), out_dir.resolve())).as_posix()
            for run in comparison.runs
        }
    write_atomically(out_dir / "compare.json", json.dumps(comparison_json(comparison), indent=2) + "\n")
    return write_atomically(
        out_dir / "index.html", render_compare(comparison, templates_dir, report_links, home_href=home_href)
    )
