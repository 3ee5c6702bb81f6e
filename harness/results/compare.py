"""Runs side by side: per claim, pair and condition, each run's measured ratio, interval and verdict.

The first run given is the reference. Every other run is compared with it: whether its
verdict flipped, and whether its ratio differs from the reference's by more than the two
runs' noise explains (see ratio_difference). The hosts' environments (CPU, cores, memory,
kernel, topology, CPU restriction, links, sysctls, host settings such as IRQ affinity and
RPS, tool and package versions, experiment parameters) are listed with the rows that
differ first, since a flipped verdict on another host is first of all a different host.

Runs of different experiment files (their sha256 differs) measure different things and
are refused unless the caller allows it.

Pure functions over RunRecords; load_run reads a run directory, write_comparison writes the
page and its JSON. Nothing here prints.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness.results import charts, report
from harness.results.analyse import Thresholds, ratio_interval, run_means
from harness.results.store import write_atomically
from harness.errors import HarnessError

FORMAT_VERSION = 1
COMPARE_TEMPLATE = "compare.html.j2"
CONDITION_COLUMN = "condition"

METHOD = (
    "Each run's ratio has a bootstrap interval of the log ratio from its own run means (the interval "
    "its verdict used). Two runs are independent, so the log of the ratio of their ratios has a "
    "standard error of sqrt(se_a² + se_b²), each se read off its run's interval as half-width / z "
    "(Altman and Bland, BMJ 2003, \"Interaction revisited: the difference between two estimates\"). "
    "For the few runs a run has, each se is scaled by sqrt(n / (n - 1)) and the test uses Student's t "
    "with Welch-Satterthwaite degrees of freedom (n_baseline + n_treatment - 2 per run). The difference "
    "is significant when the interval of the ratio of ratios, at the verdicts' confidence, excludes 1. "
    "Every run is compared with the first one; with many rows, expect about one in twenty to come out "
    "significant by chance."
)


# --- one run on disk -----------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """What compare and publish need of one run directory."""

    path: Path
    manifest: dict
    verdicts: tuple[dict, ...]
    values: pd.DataFrame  # variant, run, value, condition ("" without a sweep)
    summary: dict | None

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @property
    def started(self) -> str:
        return str(self.manifest.get("started") or "")

    @property
    def status(self) -> str:
        return str(self.manifest.get("status") or "unknown")

    @property
    def experiment(self) -> dict:
        return self.manifest.get("experiment") or {}

    @property
    def claim_id(self) -> str:
        claim = self.experiment.get("claim_id")
        if claim:
            return str(claim)
        return str(self.verdicts[0].get("claim_id")) if self.verdicts else "unknown"

    @property
    def experiment_sha256(self) -> str | None:
        return self.experiment.get("sha256")

    @property
    def host_label(self) -> str:
        """The hosts' own names (`hostname` fact), else their inventory names."""
        facts = (self.manifest.get("hosts") or {}).get("facts") or {}
        names = sorted({str((fact or {}).get("hostname") or host) for host, fact in facts.items()})
        return ", ".join(names) or "unknown host"


def load_run(path: str | Path) -> RunRecord:
    """Read a run directory: manifest.json, verdicts.json, measurements.csv, summary.json if present."""
    path = Path(path)
    manifest = _read_json(path, "manifest.json", "is this a run directory?")
    verdicts = _read_json(path, "verdicts.json", "the run wrote no verdicts; it cannot be compared")
    if not isinstance(manifest, dict) or not isinstance(verdicts, list):
        raise HarnessError(f"{path}: manifest.json or verdicts.json does not hold what a run writes")
    summary = _read_json(path, "summary.json", "") if (path / "summary.json").exists() else None
    return RunRecord(path=path, manifest=manifest, verdicts=tuple(verdicts), values=_read_values(path),
                     summary=summary if isinstance(summary, dict) else None)


def _read_json(path: Path, name: str, hint: str):
    try:
        return json.loads((path / name).read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path}: no {name}; {hint}") from None
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path / name}: cannot be read: {exc}") from None


def _read_values(path: Path) -> pd.DataFrame:
    columns = ["variant", "run", "value", CONDITION_COLUMN]
    try:
        values = pd.read_csv(path / "measurements.csv", dtype={CONDITION_COLUMN: str}, keep_default_na=False,
                             na_values=[""])
    except (FileNotFoundError, pd.errors.EmptyDataError):  # no trial completed
        return pd.DataFrame({column: pd.Series(dtype=float if column == "value" else object) for column in columns})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise HarnessError(f"{path / 'measurements.csv'}: cannot be read: {exc}") from None
    if CONDITION_COLUMN not in values.columns:
        values[CONDITION_COLUMN] = ""
    values[CONDITION_COLUMN] = values[CONDITION_COLUMN].fillna("").astype(str)
    return values


def condition_label(entry: dict) -> str:
    """A verdict entry's condition as text: its condition_label, else built from its condition."""
    label = entry.get("condition_label")
    if label:
        return str(label)
    return ", ".join(f"{key}={value}" for key, value in (entry.get("condition") or {}).items())


def pair_name(entry: dict) -> str:
    return str(entry.get("pair_name") or "/".join(entry.get("pair") or ()) or "pair")


def row_key(entry: dict) -> tuple[str, str, str]:
    """What a verdict entry is about: (claim_id, pair_name, condition label or "")."""
    return str(entry.get("claim_id") or ""), pair_name(entry), condition_label(entry)


def better_of(run: RunRecord, entry: dict) -> str:
    """Which direction of the metric is better. Runs store times (unit s, lower is better)
    unless an entry or summary.json says otherwise."""
    return str(entry.get("better") or (run.summary or {}).get("better") or "lower")


# --- the environment -------------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentRow:
    name: str
    values: tuple[str | None, ...]  # one per run; None where the run does not record it

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


def fingerprint(run: RunRecord) -> dict[str, str]:
    """The run's environment as flat `name: value` text, in a stable order.

    Hosts are named by their roles ("server+client") rather than inventory names, so that
    runs on different machines line up row by row; the host's names are rows of their own.
    """
    manifest = run.manifest
    hosts = manifest.get("hosts") or {}
    facts = hosts.get("facts") or {}
    labels = _role_labels(run, list(facts))
    rows: dict[str, str] = {}
    for host, fact in facts.items():
        label = labels.get(host, host)
        rows[f"{label}: inventory name"] = host
        for key, value in _flatten(fact or {}):
            rows[f"{label}: {key}"] = value
    for host, topology in (hosts.get("topology") or {}).items():
        for key, value in _flatten(topology or {}, "topology"):
            rows[f"{labels.get(host, host)}: {key}"] = value
    if "cpu_restriction" in hosts:  # `harness run --cpus`: fewer CPUs make other hardware
        restriction = hosts["cpu_restriction"]
        for key, text in _flatten("none" if restriction is None else restriction, "CPU restriction"):
            rows[key] = text
    for key, value in _links(run, labels).items():
        rows[key] = value
    for key, value in _flatten(hosts.get("sysctls_applied") or {}, "sysctl applied"):
        rows[key] = value
    for host, sysctls in (hosts.get("sysctls_before") or {}).items():
        for key, value in _flatten(sysctls or {}, "sysctl before"):
            rows[f"{labels.get(host, host)}: {key}"] = value
    for host, settings in (hosts.get("settings_before") or {}).items():
        for key, value in _flatten(settings or {}, "setting before"):
            rows[f"{labels.get(host, host)}: {key}"] = value
    for host, notes in (hosts.get("state_notes") or {}).items():
        rows[f"{labels.get(host, host)}: state notes"] = "; ".join(map(str, notes or []))
    for host, tools in (hosts.get("tools") or {}).items():
        for key, value in _flatten(tools or {}, "tool"):
            rows[f"{labels.get(host, host)}: {key}"] = value
    python = manifest.get("python") or {}
    if python.get("version"):
        rows["python"] = str(python["version"])
    for key, value in _flatten(python.get("packages") or {}, "package"):
        rows[key] = value
    for key, value in _flatten(manifest.get("harness") or {}, "harness"):
        rows[key] = value
    experiment = run.experiment
    for field in ("file", "sha256"):
        if experiment.get(field) is not None:
            rows[f"experiment {field}"] = str(experiment[field])
    if "quick" in experiment:
        rows["profile"] = "quick" if experiment["quick"] else "full"
    for key, value in _flatten(experiment.get("parameters") or {}, "parameter"):
        rows[key] = value
    return rows


def environment_rows(runs: Sequence[RunRecord]) -> list[EnvironmentRow]:
    """Every fingerprint row across the runs, those whose values differ first."""
    prints = [fingerprint(run) for run in runs]
    names = list(dict.fromkeys(name for found in prints for name in found))
    rows = [EnvironmentRow(name, tuple(found.get(name) for found in prints)) for name in names]
    return [row for row in rows if row.differs] + [row for row in rows if not row.differs]


def _role_labels(run: RunRecord, hosts: list[str]) -> dict[str, str]:
    """host -> "server+client" from the verdicts' conditions ("server host": name)."""
    conditions = (run.verdicts[0].get("conditions") or {}) if run.verdicts else {}
    roles: dict[str, list[str]] = {}
    for key, value in conditions.items():
        if key.endswith(" host") and value in hosts:
            roles.setdefault(value, []).append(key.removesuffix(" host"))
    return {host: "+".join(names) for host, names in roles.items()}


def _links(run: RunRecord, labels: dict[str, str]) -> dict[str, str]:
    """The links the load took ("lo, mtu 65536, 1 rx / 1 tx queues, ..."), hosts named by role."""
    conditions = (run.verdicts[0].get("conditions") or {}) if run.verdicts else {}
    links = {}
    for key, value in conditions.items():
        if key.startswith("link ") and " -> " in key:
            client, server = key.removeprefix("link ").split(" -> ", 1)
            links[f"link {labels.get(client, client)} -> {labels.get(server, server)}"] = str(value)
    return links


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        found = []
        for key, inner in value.items():
            found += _flatten(inner, f"{prefix} {key}".strip())
        return found
    if isinstance(value, (list, tuple)):
        return [(prefix, ", ".join(map(str, value)))]
    return [(prefix, "" if value is None else str(value))]


# --- is the difference between two runs real? ------------------------------------------


@dataclass(frozen=True)
class Difference:
    """Another run's ratio against the reference run's, on the ratio scale: other / reference."""

    ratio: float | None  # > 1: the other run measured a larger gain
    low: float | None
    high: float | None
    p_value: float | None
    significant: bool | None  # None: a run has fewer than two run means per side
    reason: str = ""


def ratio_difference(reference: pd.DataFrame, other: pd.DataFrame, baseline: str, treatment: str, better: str,
                     thresholds: Thresholds = Thresholds()) -> Difference:
    """Whether two runs' ratios of `treatment` against `baseline` differ by more than noise.

    Method: each run's interval of the log ratio comes from analyse.ratio_interval (the
    bootstrap of its run means that its verdict used); its standard error is read off the
    interval as (log ci_high - log ci_low) / (2 z), z the normal quantile of the confidence.
    The runs are independent, so the difference d of their log ratios has standard error
    se = sqrt(se_ref² + se_other²) (Altman and Bland, BMJ 2003). Two small-sample
    corrections keep the test at its nominal level with the 3-12 runs a run has: each se is
    scaled by sqrt(n / (n - 1)), n the mean runs per variant (the bootstrap spreads by the
    plug-in variance, which divides by n), and d / se is referred to Student's t with
    Welch-Satterthwaite degrees of freedom, each run giving n_baseline + n_treatment - 2.
    (Without them, runs of 5 came out "significant" in 10% of A/A pairs instead of 5%.)
    The difference is significant when the interval d ± t * se excludes 0, i.e. when the
    interval of other/reference excludes 1; p is the two-sided t probability. When both
    intervals have no width (identical run means) any difference counts as significant
    and none as not.
    """
    means = {name: (run_means(frame, baseline), run_means(frame, treatment))
             for name, frame in (("reference", reference), ("other", other))}
    short = [name for name, (base, treat) in means.items() if min(len(base), len(treat)) < 2]
    if short:
        return Difference(None, None, None, None, None,
                          f"the {' and '.join(short)} run has fewer than two run means of a variant")
    if not all(np.all(np.isfinite(side)) and np.all(side > 0) for pair in means.values() for side in pair):
        return Difference(None, None, None, None, None, "a run mean is not a positive number")
    z = stats.norm.ppf(1 - (1 - thresholds.confidence) / 2)
    logs, errors, freedoms = [], [], []
    for base, treat in means.values():
        low, high = ratio_interval(base, treat, better, thresholds)
        gain = math.log(np.mean(base)) - math.log(np.mean(treat))
        logs.append(gain if better == "lower" else -gain)
        runs = (len(base) + len(treat)) / 2
        errors.append((math.log(high) - math.log(low)) / (2 * z) * math.sqrt(runs / (runs - 1)))
        freedoms.append(len(base) + len(treat) - 2)
    difference = logs[1] - logs[0]
    error = math.hypot(*errors)
    if error == 0:
        significant = difference != 0
        return Difference(math.exp(difference), math.exp(difference), math.exp(difference),
                          0.0 if significant else 1.0, significant, "both runs' intervals have no width")
    freedom = error ** 4 / sum(e ** 4 / f for e, f in zip(errors, freedoms) if e > 0)
    quantile = stats.t.ppf(1 - (1 - thresholds.confidence) / 2, freedom)
    p_value = float(2 * stats.t.sf(abs(difference) / error, freedom))
    low, high = math.exp(difference - quantile * error), math.exp(difference + quantile * error)
    return Difference(math.exp(difference), low, high, p_value, bool(low > 1 or high < 1))


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
        return any(cell is not None and cell.difference is not None and cell.difference.significant
                   for cell in self.cells)


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


def check_same_experiment(runs: Sequence[RunRecord]) -> str | None:
    """None when every run comes from one experiment file (same sha256), else why not."""
    digests = {run.experiment_sha256 for run in runs}
    if len(digests) <= 1 and None not in digests:
        return None
    described = "; ".join(f"{run.run_id}: {run.experiment.get('file', '?')} (sha256 "
                          f"{(run.experiment_sha256 or 'not recorded')[:12]})" for run in runs)
    return f"the runs come from different experiment definitions ({described})"


def compare_runs(runs: Sequence[RunRecord], *, allow_different: bool = False,
                 thresholds: Thresholds = Thresholds()) -> Comparison:
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
        raise HarnessError(f"{different}: their numbers measure different things; compare runs of one "
                           "experiment file, or pass --allow-different to compare them anyway")
    keys: dict[tuple[str, str, str], list[dict | None]] = {}
    for position, run in enumerate(runs):
        for entry in run.verdicts:
            keys.setdefault(row_key(entry), [None] * len(runs))[position] = entry
    rows = tuple(_row(key, entries, runs, thresholds) for key, entries in keys.items())
    return Comparison(runs=tuple(_info(run) for run in runs), environment=tuple(environment_rows(runs)), rows=rows,
                      same_experiment=different is None, confidence=thresholds.confidence)


def _row(key, entries: list[dict | None], runs: Sequence[RunRecord], thresholds: Thresholds) -> Row:
    claim_id, name, condition = key
    first = next(entry for entry in entries if entry is not None)
    baseline, treatment = (list(first.get("pair") or ()) + ["", ""])[:2]
    reference = entries[0]
    cells = []
    for position, (run, entry) in enumerate(zip(runs, entries)):
        if entry is None:
            cells.append(None)
            continue
        difference = None
        if position > 0 and reference is not None:
            difference = ratio_difference(_condition_values(runs[0], condition), _condition_values(run, condition),
                                          baseline, treatment, better_of(run, entry), thresholds)
        cells.append(Cell(
            run_id=run.run_id, measured_ratio=entry.get("measured_ratio"), ci_low=entry.get("ci_low"),
            ci_high=entry.get("ci_high"), verdict=str(entry.get("verdict") or "unknown"),
            reason=str(entry.get("reason") or ""), n_baseline=entry.get("n_baseline"),
            n_treatment=entry.get("n_treatment"),
            flipped=position > 0 and reference is not None and entry.get("verdict") != reference.get("verdict"),
            difference=difference,
        ))
    return Row(claim_id=claim_id, pair_name=name, condition=condition, baseline=baseline, treatment=treatment,
               claimed_ratio=first.get("claimed_ratio"), cells=tuple(cells))


def _condition_values(run: RunRecord, condition: str) -> pd.DataFrame:
    return run.values[run.values[CONDITION_COLUMN] == condition]


def _info(run: RunRecord) -> RunInfo:
    return RunInfo(run_id=run.run_id, started=run.started, host=run.host_label, status=run.status,
                   claim_id=run.claim_id, experiment_file=str(run.experiment.get("file") or ""),
                   experiment_sha256=run.experiment_sha256, path=str(run.path))


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
        "environment_differences": [{"name": row.name, "values": dict(zip(ids, row.values))}
                                    for row in comparison.differing_environment],
        "environment": [{"name": row.name, "values": dict(zip(ids, row.values))} for row in comparison.environment],
        "rows": [
            {
                "claim_id": row.claim_id, "pair_name": row.pair_name, "condition_label": row.condition,
                "pair": [row.baseline, row.treatment], "claimed_ratio": row.claimed_ratio,
                "flipped": row.flipped, "significant": row.significant,
                "cells": {run_id: None if cell is None else _plain(asdict(cell))
                          for run_id, cell in zip(ids, row.cells)},
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


def render_compare(comparison: Comparison, templates_dir: Path, report_links: dict[str, str], *,
                   json_href: str = "compare.json", home_href: str | None = None) -> str:
    """The compare page. `report_links` maps run id -> href of its report, relative to the page."""
    return report.environment(templates_dir).get_template(COMPARE_TEMPLATE).render(
        comparison=comparison, reference=comparison.runs[0], report_links=report_links, json_href=json_href,
        home_href=home_href, chart=compare_svg(comparison), flipped=sum(row.flipped for row in comparison.rows),
        significant=sum(row.significant for row in comparison.rows),
    )


def compare_svg(comparison: Comparison, *, id_prefix: str = "compare") -> str:
    """The chart of the compare page (charts.comparison_svg): a row per pair and condition, a
    point per run; "" when no run measured anything."""
    return charts.comparison_svg(
        [{"label": row.pair_name + (f"\n{row.condition}" if row.condition else ""), "claimed_ratio": row.claimed_ratio,
          "cells": [None if cell is None else asdict(cell) for cell in row.cells]} for row in comparison.rows],
        id_prefix=id_prefix)


def _landing(run_dir: Path) -> Path:
    """A run's report, else (a run directory without one) its verdicts.json."""
    report = run_dir.resolve() / "index.html"
    return report if report.is_file() else run_dir.resolve() / "verdicts.json"


def write_comparison(comparison: Comparison, out_dir: Path, templates_dir: Path,
                     home_href: str | None = None, report_links: dict[str, str] | None = None) -> Path:
    """index.html and compare.json in out_dir; report links relative to it unless given. Returns the page."""
    out_dir = Path(out_dir)
    if (out_dir / "manifest.json").exists():
        raise HarnessError(f"{out_dir}: is a run directory; pick another --out for the comparison")
    out_dir.mkdir(parents=True, exist_ok=True)
    if report_links is None:
        report_links = {run.run_id: Path(os.path.relpath(_landing(Path(run.path)), out_dir.resolve())).as_posix()
                        for run in comparison.runs}
    write_atomically(out_dir / "compare.json", json.dumps(comparison_json(comparison), indent=2) + "\n")
    return write_atomically(out_dir / "index.html",
                            render_compare(comparison, templates_dir, report_links, home_href=home_href))

