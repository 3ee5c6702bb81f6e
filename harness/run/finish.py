"""The run's last stage: analyse what was gathered and write it, whatever stopped the run.

    trials -> tables, pyperf files, gates -> verdicts -> summary and manifest -> report

This side knows the experiment and the plan; it describes them (conditions, notes, the
manifest) in the run format's typed records (`harness.results.store`) and hands plain data
to `verdicts` for the verdicts and to `report` for the page.
"""

from __future__ import annotations

import datetime
import platform
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd

from harness import controller, resources
from harness.cpuset import placed
from harness.errors import HarnessError, Interrupted
from harness.hosts.hoststate import HostState
from harness.hosts.inventory import Host, Inventory
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
from harness.run import collect, preflight
from harness.run.plan import Plan

PACKAGES = (
    "harness",
    "ansible-runner",
    "ansible-core",
    "fabric",
    "paramiko",
    "invoke",
    "pyperf",
    "pandas",
    "numpy",
    "scipy",
    "jinja2",
    "pydantic",
    "matplotlib",
    "click",
    "rich",
)
# status: valid, replaced (failed a gate; a later trial ran in its place) or excluded (failed, not replaced)
GATE_COLUMNS = ["variant", "condition", "run", "order", "gate", "value", "limit", "passed", "status", "detail"]


@dataclass
class Gathered:
    """What the run has learnt so far; the results are written from it whatever happens."""

    started: str
    trials: list[store.Trial]
    state: HostState | None = None
    tools: dict | None = None
    links: list[store.Link] = field(default_factory=list)
    error: HarnessError | None = None
    rounds: int = 0  # repetitions completed by every variant
    stop_reason: str | None = None
    resumed_trials: int = 0  # trials taken over from the interrupted run this one resumes
    topology: dict | None = None  # host -> {"cpus", "numa_nodes"}; the full text is in raw/topology-HOST.txt
    not_applicable: str | None = None  # why the hosts cannot test the claim (experiment `requires`)
    drift: list = field(default_factory=list)  # hoststate.Drift: settings restore could not put back
    recovered: list = field(default_factory=list)  # {"host", "run_id", "result"}: stale journals restored first


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    status: str
    verdicts: list[PairVerdict]
    claim_verdict: ClaimVerdict | None = None
    replaced_trials: int = 0  # trials that failed a gate and were run again
    invalid_by_gate: dict = field(default_factory=dict)  # gate -> trials it failed (replaced or not)


def write_running(
    spec,
    digest: str,
    experiment_path: Path,
    inventory: Inventory,
    hosts_by_role: dict,
    plan: Plan,
    run: RunDirectory,
    gathered: Gathered,
) -> None:
    """The manifest of a run under way (status "running", everything known so far, this
    process as its controller), written as the run starts and again as it goes: a run
    directory left by a killed controller is then one `harness run --resume` can finish."""
    costs = collect.costs_frame(gathered.trials)
    _, status_by_order = _judge_trials(spec, gathered.trials)
    run.write_manifest(
        _manifest(
            spec,
            digest,
            experiment_path,
            inventory,
            hosts_by_role,
            plan,
            run,
            gathered,
            "running",
            None,
            costs,
            status_by_order,
        )
    )


def _judge_trials(spec, trials: list[store.Trial]) -> tuple[list[dict], dict[int, str]]:
    """Every trial's gate rows, and each trial's status (valid, replaced, excluded) by its order."""
    gate_rows = [row for trial in trials for row in collect.gates_for(spec, trial)]
    rows_by_trial: dict[int, list[dict]] = {}
    for row in gate_rows:
        rows_by_trial.setdefault(row["order"], []).append(row)
    status_by_order = collect.trial_status(rows_by_trial, trials)
    for row in gate_rows:
        row["status"] = status_by_order[row["order"]]
    return gate_rows, status_by_order


def write_results(
    spec,
    digest: str,
    experiment_path: Path,
    inventory: Inventory,
    hosts_by_role: dict,
    plan: Plan,
    run: RunDirectory,
    gathered: Gathered,
) -> RunOutcome:
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
    conditions = describe_conditions(spec, hosts_by_role, plan, gathered)
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
    manifest = _manifest(
        spec,
        digest,
        experiment_path,
        inventory,
        hosts_by_role,
        plan,
        run,
        gathered,
        status,
        finished,
        costs,
        status_by_order,
    )
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
            notes=run_notes(spec, hosts_by_role, plan, gathered),
            drift=[asdict(item) for item in gathered.drift],
        ),
        resources.TEMPLATES,
    )
    run.write_report(html)
    # Last: the sha256 of every file the run wrote, for `harness verify`.
    run.write_manifest(store.Manifest(**{**manifest.__dict__, "file_sha256": run.digests()}))
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


def describe_conditions(spec, hosts_by_role, plan: Plan, gathered: Gathered) -> dict[str, str]:
    """The report's conditions table: hosts, links, parameters, sweep, CPUs, sysctls, tools."""
    conditions = {}
    facts = gathered.state.facts if gathered.state else {}
    for role, hosts in hosts_by_role.items():
        host = hosts[0]
        conditions[f"{role} host"] = host.name
        fact = facts.get(host.name)
        if fact:
            conditions[f"{role} CPU"] = f"{fact.get('cpu_model')} ({fact.get('cores')} cores)"
            conditions[f"{role} memory"] = f"{fact.get('memory_mib')} MiB"
            conditions[f"{role} kernel"] = str(fact.get("kernel"))
            conditions[f"{role} OS"] = str(fact.get("os"))
            if fact.get("nic"):
                conditions[f"{role} NIC"] = str(fact["nic"])
    for host, facts in (gathered.topology or {}).items():
        conditions[f"topology ({host})"] = (
            f"{facts.get('cpus')} CPUs, {facts.get('numa_nodes')} NUMA "
            f"node{'s' if facts.get('numa_nodes') != 1 else ''} "
            f"({RunDirectory.topology_name(host)})"
        )
    for link in gathered.links:
        conditions[f"link {link.client} -> {link.server}"] = link.description
    for key, value in plan.profile.parameters.items():
        conditions[f"parameter {key}"] = str(value)
    for key, values in plan.profile.sweep.items():
        conditions[f"swept {key}"] = ", ".join(map(str, values))
    conditions["repetitions"] = (
        f"{gathered.rounds} (at least {plan.profile.stopping.minimum}, at most {plan.profile.stopping.maximum})"
    )
    conditions["trial order seed"] = str(plan.seed)
    conditions["warm-up values per trial"] = str(spec.warmup_values)
    conditions["profile"] = "quick" if plan.profile.quick else "full"
    restriction = plan.profile.cpus
    for name in plan.variants:
        variant = spec.variants[name]
        server_cpus = placed(variant.server.cpus, restriction) if variant.server else "(no server)"
        conditions[f"{name} CPUs"] = (
            f"server {server_cpus or 'any'}, load {placed(variant.load.cpus, restriction) or 'any'}"
        )
    if restriction:
        conditions["CPU restriction (--cpus)"] = str(restriction)
    if spec.link.delay_ms:
        via = (
            "netem in the link"
            if preflight.proxy_delay(spec, gathered.links) is None
            else "harness/hosts/delay_proxy.py on the client host (no netem)"
        )
        conditions["added delay"] = f"{spec.link.delay_ms:g} ms each way, by {via}"
    for key, value in spec.provision.sysctls.items():
        conditions[f"sysctl {key}"] = str(value)
    for host, tools in (gathered.tools or {}).items():
        for tool, version in tools.items():
            conditions[f"{tool} ({host})"] = str(version)
    return conditions


def run_notes(spec, hosts_by_role, plan: Plan, gathered: Gathered) -> list[str]:
    """The report's notes: the experiment's own, then what this run adds (drift, an early stop,
    not applicable, the claim's ceiling on these CPUs, loopback, the harness's own cost)."""
    notes = list(spec.notes)
    if gathered.drift:
        notes.append(
            f"The hosts did not return to their snapshot: {len(gathered.drift)} setting"
            f"{'s' if len(gathered.drift) != 1 else ''} differ after restore (Host state after the run, "
            f"{store.DRIFT}). The measurements themselves completed."
        )
    elif gathered.error is not None:
        notes.append(f"The run stopped early: {gathered.error}. The numbers above are the trials that completed.")
    if gathered.not_applicable:
        notes.append(f"Not applicable here: {gathered.not_applicable}")
    if spec.claim.ceiling == "cpus" and gathered.topology:
        fewest = min((facts["cpus"] for facts in gathered.topology.values() if facts.get("cpus")), default=None)
        if plan.profile.cpus:
            fewest = len(plan.profile.cpus)
        if fewest:
            verdict = (
                "more than this host can give, so no run here can reproduce it"
                if spec.claim.claimed_ratio > fewest
                else "within what this host can give"
            )
            notes.append(
                f"Ceiling: spreading work over {fewest} CPUs can at best make it {fewest}x faster; "
                f"the claimed {spec.claim.claimed_ratio:g}x is {verdict}."
            )
    roles = {role: hosts[0] for role, hosts in hosts_by_role.items()}
    if len({host.name for host in roles.values()}) == 1:
        notes.append(
            "Server and load generator share one host over loopback: the receiver's kernel work "
            "runs on the sender's CPU, so CPU pinning separates the processes but not all their costs."
        )
    if gathered.trials:
        window_cpu = sum(trial.harness_cpu_seconds for trial in gathered.trials)
        window_wall = sum(trial.wall_seconds for trial in gathered.trials)
        notes.append(
            f"The harness used {window_cpu:.3f} CPU s during {window_wall:.1f} s of load windows "
            f"({store.COSTS}, {store.MANIFEST})."
        )
    return notes


def _manifest(
    spec,
    digest,
    experiment_path,
    inventory,
    hosts_by_role,
    plan,
    run,
    gathered,
    status,
    finished,
    costs,
    status_by_order,
) -> store.Manifest:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    state = gathered.state
    return store.Manifest(
        run_id=run.run_id,
        status=status,
        started=gathered.started,
        finished=finished,
        resumed_trials=gathered.resumed_trials,
        controller=controller.identity(),
        recovered=list(gathered.recovered),
        experiment=store.ExperimentRecord(
            file=str(experiment_path),
            path=str(Path(experiment_path).resolve()),
            sha256=digest,
            claim_id=spec.claim.id,
            quick=plan.profile.quick,
            repetitions=plan.profile.repetitions,
            parameters=plan.profile.parameters,
        ),
        inventory=str(inventory.path),
        harness={"version": _version("harness"), "git_commit": _git_commit()},
        python={"version": platform.python_version(), "packages": {name: _version(name) for name in PACKAGES}},
        hosts=store.Hosts(
            roles={role: tuple(host.name for host in hosts) for role, hosts in hosts_by_role.items()},
            links=tuple(gathered.links),
            facts=state.facts if state else {},
            sysctls_before=state.sysctls_before if state else {},
            sysctls_applied=dict(spec.provision.sysctls),
            settings_before=state.settings_before if state else {},
            state_notes=state.notes if state else {},
            cpu_restriction=str(plan.profile.cpus) if plan.profile.cpus else None,
            topology=gathered.topology or {},
            tools=gathered.tools or {},
        ),
        trials={
            "planned": len(plan.trials),
            "most": plan.most_trials,
            "completed": len(gathered.trials),
            # Failed a validity gate: run again (replaced) or not (excluded); see the gate table.
            "replaced": sum(status == "replaced" for status in status_by_order.values()),
            "excluded": sum(status == "excluded" for status in status_by_order.values()),
        },
        order_seed=plan.seed,
        stopping=store.Stopping(
            minimum=plan.profile.stopping.minimum,
            maximum=plan.profile.stopping.maximum,
            target_half_width=plan.profile.stopping.target,
            time_budget_s=plan.profile.stopping.budget_s,
            rounds=gathered.rounds,
            reason=gathered.stop_reason,
            retries_per_variant=plan.retries_per_variant,
            retries_total=plan.retries_total,
        ),
        harness_costs={
            "cpu_seconds": round(own.ru_utime + own.ru_stime, 3),
            "children_cpu_seconds": round(children.ru_utime + children.ru_stime, 3),
            "cpu_seconds_in_load_windows": round(float(costs["harness_cpu_seconds"].sum()), 3),
            "load_window_seconds": round(float(costs["wall_seconds"].sum()), 3),
            "peak_rss_mib": round(own.ru_maxrss / 1024, 1),
        },
    )


def unique_hosts(hosts_by_role) -> list[Host]:
    seen = {}
    for hosts in hosts_by_role.values():
        for host in hosts:
            seen.setdefault(host.name, host)
    return list(seen.values())


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The checkout's commit (+dirty); None for an installed harness, which has no checkout."""
    if resources.CHECKOUT is None:
        return None
    root = str(resources.CHECKOUT)
    try:
        result = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        # --no-optional-locks: a plain `git status` takes .git/index.lock, a write outside the run.
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
