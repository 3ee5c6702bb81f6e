"""The run's last stage: analyse what was gathered and write it, whatever stopped the run.

    trials -> tables, pyperf files, gates -> verdicts -> summary and manifest -> report

This side knows the experiment and the plan; it describes them (conditions, notes, the
manifest) in the run format's typed records (`harness.results.store`) and hands plain data
to `verdicts` for the verdicts and to `report` for the page.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from harness import resources
from harness.errors import HarnessError, Interrupted
from harness.results import report, store
from harness.results.store import RunDirectory
from harness.results.verdicts import (
    CLAIM_RULE,
    ClaimVerdict,
    PairVerdict,
    claim_verdict,
    compare_pair,
    cross_check,
    invalid_reason,
    replaced_counts,
    thresholds_for,
)
from harness.run import collect, gates
from harness.run.context import Gathered, RunContext, now
from harness.run.describe import describe_conditions, manifest_of, run_notes

# status: valid, replaced (failed a gate; a later trial ran in its place) or excluded (failed, not replaced)
GATE_COLUMNS = ["variant", "condition", "run", "order", "gate", "value", "limit", "passed", "status", "detail"]


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    status: str
    verdicts: list[PairVerdict]
    claim_verdict: ClaimVerdict | None = None
    replaced_trials: int = 0  # trials that failed a gate and were run again
    invalid_by_gate: dict = field(default_factory=dict)  # gate -> trials it failed (replaced or not)


def write_running(context: RunContext, gathered: Gathered) -> None:
    """The manifest of a run under way (status "running", everything known so far, this
    process as its controller), written as the run starts and again as it goes: a run
    directory left by a killed controller is then one `harness run --resume` can finish."""
    costs = collect.costs_frame(gathered.trials)
    _, status_by_order = _judge_trials(context.spec, gathered.trials)
    context.run.write_manifest(manifest_of(context, gathered, "running", None, costs, status_by_order))


def _judge_trials(spec, trials: list[store.Trial]) -> tuple[list[dict], dict[int, str]]:
    """Every trial's gate rows, and each trial's status (valid, replaced, excluded) by its order."""
    gate_rows = [row for trial in trials for row in gates.gates_for(spec, trial)]
    rows_by_trial: dict[int, list[dict]] = {}
    for row in gate_rows:
        rows_by_trial.setdefault(row["order"], []).append(row)
    status_by_order = gates.trial_status(rows_by_trial, trials)
    for row in gate_rows:
        row["status"] = status_by_order[row["order"]]
    return gate_rows, status_by_order


def write_results(context: RunContext, gathered: Gathered) -> RunOutcome:
    spec, plan, run = context.spec, context.plan, context.run
    trials = gathered.trials
    gate_rows, status_by_order = _judge_trials(spec, trials)
    # The statistics see valid trials only; the others stay in the trial, cost and gate tables.
    valid = [trial for trial in trials if status_by_order[trial.order] == "valid"]
    values = collect.values_frame(valid)
    costs = collect.costs_frame(trials)
    costs["status"] = [status_by_order[order] for order in costs["order"]]
    swept = len(plan.conditions) > 1
    for number, condition in enumerate(plan.conditions):
        for variant in plan.variants:
            collect.write_pyperf(
                valid, variant, spec.claim.id, run.pyperf_file(variant, number if swept else None), condition.label
            )
    run.write_tables(values, costs, pd.DataFrame(gate_rows, columns=GATE_COLUMNS))
    run.write_drift([asdict(item) for item in gathered.drift])

    verdicts, pyperf_lines, thresholds_by_condition = [], [], {}
    for number, condition in enumerate(plan.conditions):
        own = values[values["condition"] == condition.label]
        thresholds = thresholds_by_condition[condition.label] = thresholds_for(
            own, [pair.baseline for pair in spec.pairs], spec.analysis.k, spec.analysis.margin
        )
        for pair in spec.pairs:
            invalid = invalid_reason(gate_rows, pair.baseline, pair.treatment, condition.label)
            verdict = judge_pair(
                spec,
                own,
                pair,
                thresholds=thresholds,
                invalid=invalid,
                condition=condition.label,
                not_applicable=gathered.not_applicable,
            )
            verdicts.append(verdict)
            pyperf_lines.append(_pyperf_compare(run, pair, verdict, number if swept else None))
    summary_verdict = claim_verdict(verdicts)
    replaced = {
        (v.label): {
            "gates": replaced_counts(gate_rows, (v.baseline, v.treatment), v.condition),
            "replaced": sum(
                status_by_order[trial.order] == "replaced"
                for trial in trials
                if trial.variant in (v.baseline, v.treatment) and trial.condition == v.condition
            ),
        }
        for v in verdicts
    }
    replaced_total = sum(status == "replaced" for status in status_by_order.values())
    status = _status(gathered.error)
    conditions = describe_conditions(context, gathered)
    sweep = plan.profile.sweep
    run.write_summary(
        store.Summary(
            claim_id=spec.claim.id,
            statement=spec.claim.statement,
            claimed_ratio=spec.claim.claimed_ratio,
            better=spec.claim.better,
            status=status,
            sweep={key: list(values) for key, values in sweep.items()},
            rule=CLAIM_RULE,
            replaced_trials=replaced_total,
            **summary_verdict.as_dict(),
        )
    )
    condition_values = {condition.label: dict(condition.values) for condition in plan.conditions}
    run.write_verdicts(
        [
            _verdict_entry(
                spec,
                v,
                condition_values[v.condition],
                thresholds_by_condition[v.condition],
                line,
                conditions,
                invalid_trials=replaced[v.label]["gates"],
                replaced_trials=replaced[v.label]["replaced"],
            )
            for v, line in zip(verdicts, pyperf_lines, strict=True)
        ]
    )
    finished = now()
    manifest = manifest_of(context, gathered, status, finished, costs, status_by_order)
    run.write_manifest(manifest)

    series = report.series(plan.variants, [condition.label for condition in plan.conditions])
    html = report.render_report(
        report.build_context(
            run_id=run.run_id,
            status=status,
            started=gathered.started,
            finished=finished,
            claim={
                "id": spec.claim.id,
                "statement": spec.claim.statement,
                "source_file": spec.claim.source.file,
                "source_section": spec.claim.source.section,
                "claimed_ratio": spec.claim.claimed_ratio,
                "metric": spec.claim.metric,
                "unit": spec.claim.unit,
                "better": spec.claim.better,
            },
            descriptions={name: spec.variants[name].description for name in plan.variants},
            series=series,
            values=values,
            costs=costs,
            trials=trials,
            conditions=conditions,
            claim_verdict=summary_verdict,
            sweep=sweep,
            verdicts=verdicts,
            thresholds=thresholds_by_condition[plan.conditions[0].label],
            gates=gate_rows,
            pyperf=pyperf_lines,
            stopping={
                "reason": gathered.stop_reason or "the run stopped early",
                "repetitions": gathered.rounds,
                "target_half_width": plan.profile.stopping.target,
                "achieved": {v.label: v.half_width for v in verdicts},
            },
            files=run.report_links(),
            notes=run_notes(context, gathered),
            drift=[asdict(item) for item in gathered.drift],
            timing=manifest.timing,
        ),
        resources.TEMPLATES,
    )
    run.write_report(html)
    # Last: the time drawing the page took, and the sha256 of every file the run wrote (`harness verify`).
    timing = gathered.clock.record(gathered.trials)
    run.write_manifest(store.Manifest(**{**manifest.__dict__, "timing": timing, "file_sha256": run.digests()}))
    return RunOutcome(
        run_dir=run.path,
        status=status,
        verdicts=verdicts,
        claim_verdict=summary_verdict,
        replaced_trials=replaced_total,
        invalid_by_gate=replaced_counts(gate_rows, tuple(plan.variants), None),
    )


def judge_pair(spec, values: pd.DataFrame, pair, **extra) -> PairVerdict:
    """One pair's verdict over `values` (one condition's) against the experiment's claim; `extra`
    goes to compare_pair (thresholds, invalid, condition, not_applicable)."""
    return compare_pair(
        values,
        pair=pair.name,
        baseline=pair.baseline,
        treatment=pair.treatment,
        claimed_ratio=spec.claim.claimed_ratio,
        better=spec.claim.better,
        **extra,
    )


# What a verdict entry takes over from the pair's verdict as it is.
COPIED_FROM_VERDICT = (
    "claimed_ratio",
    "measured_ratio",
    "ci_low",
    "ci_high",
    "confidence",
    "verdict",
    "rule",
    "reason",
    "n_baseline",
    "n_treatment",
    "half_width",
    "runs_needed",
)


def _verdict_entry(
    spec, verdict: PairVerdict, condition: dict, thresholds, line: dict, conditions: dict, **extra
) -> store.VerdictEntry:
    return store.VerdictEntry(
        claim_id=spec.claim.id,
        better=spec.claim.better,
        condition=condition,
        condition_label=verdict.condition,
        pair=(verdict.baseline, verdict.treatment),
        pair_name=verdict.pair,
        k=thresholds.k,
        margin=thresholds.margin,
        margin_source=thresholds.margin_source,
        pyperf_compare_to=line["line"],
        pyperf_note=line["note"],
        conditions=conditions,
        **{name: getattr(verdict, name) for name in COPIED_FROM_VERDICT},
        **extra,
    )


def _pyperf_compare(run: RunDirectory, pair, verdict, condition: int | None = None) -> dict:
    """pyperf's own comparison of the two files, kept beside ours as a cross-check."""
    files = [run.pyperf_file(pair.baseline, condition), run.pyperf_file(pair.treatment, condition)]
    if not all(path.exists() for path in files):
        return {"pair": verdict.label, "line": "no pyperf files (no completed runs)", "note": None}
    result = subprocess.run(
        [sys.executable, "-m", "pyperf", "compare_to", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout.strip() or result.stderr.strip()
    store.write_atomically(run.pyperf_compare_file(pair.name, condition), output + "\n")
    line = output.splitlines()[-1] if output else "pyperf compare_to printed nothing"
    return {"pair": verdict.label, "line": line, "note": cross_check(verdict, line)}


def _status(error: HarnessError | None) -> str:
    if error is None:
        return "complete"
    if isinstance(error, Interrupted):
        return "interrupted"
    return f"failed: {error}"
