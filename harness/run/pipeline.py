"""run_experiment(): the stages in order -- the table of contents of a run.

    spec -> plan -> provision -> execute -> collect -> analyse -> report

Whatever happens after the run directory exists (a crash, a busy host,
Ctrl-C), the hosts are restored and everything gathered so far is analysed and
written, then the error goes up to the CLI.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import pandas as pd

from harness.results import analyse

from harness.results import charts

from harness.run import collect

from harness.results import report

from harness.run import spec as spec_module
from harness import resources
from harness.errors import HarnessError, Interrupted
from harness.run.execute import TrialSetting, cpus_for, parse_cpu_list, run_trial
from harness.run.interrupt import NoSignals, StopSignals
from harness.hosts.inventory import Host, Inventory, load as load_inventory
from harness.run.plan import Plan, make_plan
from harness.hosts.hoststate import DriftError, HostState
from harness.hosts.provision import Provisioner, Workspace
from harness.hosts.remote import HostSession
from harness.results.store import FORMAT_VERSION, RunDirectory

PROJECT_ROOT = resources.PROJECT_ROOT
TEMPLATES = resources.TEMPLATES
PACKAGES = ("harness", "ansible-runner", "ansible-core", "fabric", "paramiko", "invoke", "pyperf", "pandas",
            "numpy", "scipy", "jinja2", "pydantic", "matplotlib", "click", "rich")

# progress(event, info): "stage" {text}, "trials" {total}, "trial" {index, variant, seconds}
Progress = Callable[[str, dict], None]


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    status: str
    verdicts: list[analyse.PairVerdict]
    claim_verdict: analyse.ClaimVerdict | None = None


class RunFailed(HarnessError):
    """The run stopped early; its partial results are in `run_dir`."""

    def __init__(self, cause: HarnessError, run_dir: Path):
        super().__init__(f"{cause} (results so far: {run_dir})")
        self.cause = cause
        self.run_dir = run_dir


@dataclass
class _Gathered:
    """What the run has learnt so far; the report is written from it whatever happens."""

    started: str
    measurements: list
    state: HostState | None = None
    tools: dict | None = None
    links: dict | None = None
    error: HarnessError | None = None
    rounds: int = 0  # repetitions completed by every variant
    stop_reason: str | None = None
    resumed_trials: int = 0  # trials taken over from the interrupted run this one resumes
    cpu_restriction: str | None = None  # --cpus
    topology: dict | None = None  # host -> {"cpus", "numa_nodes"}; the full text is in raw/topology-HOST.txt
    not_applicable: str | None = None  # why the hosts cannot test the claim (experiment `requires`)
    drift: list = field(default_factory=list)  # provision.Drift: settings restore could not put back


def run_experiment(experiment_path: str | Path, inventory_path: str | Path, out_dir: str | Path, quick: bool = False,
                   progress: Progress | None = None, signals: StopSignals | None = None, seed: int | None = None,
                   target_half_width: float | None = None, cpus: str | None = None) -> RunOutcome:
    """Run an experiment; `seed` fixes the trial order (random and recorded when None),
    `target_half_width` overrides the experiment's adaptive target, `cpus` ("0", "0-1")
    restricts servers and load generators to those CPUs."""
    spec, digest = spec_module.load_with_digest(experiment_path)
    inventory = load_inventory(inventory_path)
    inventory.hosts_for(spec.roles)  # a missing role fails before a run directory exists
    plan = make_plan(spec, quick, seed if seed is not None else secrets.randbelow(2**31), target_half_width)
    run = RunDirectory.create(Path(out_dir), spec.claim.id)
    gathered = _Gathered(started=_now(), measurements=[], cpu_restriction=cpus)
    return _run(spec, digest, Path(experiment_path), inventory, plan, run, gathered, progress, signals)


def resume_experiment(run_dir: str | Path, inventory_path: str | Path, progress: Progress | None = None,
                      signals: StopSignals | None = None) -> RunOutcome:
    """Finish the remaining trials of an interrupted or failed run, in its own directory,
    with its experiment (unchanged since: same sha256), profile, seed and stopping rule."""
    run = RunDirectory.existing(Path(run_dir))
    manifest = run.read_json("manifest.json")
    try:
        experiment = manifest["experiment"]
        experiment_path = Path(experiment.get("path") or experiment["file"])
        status, seed, quick = manifest["status"], manifest["order_seed"], experiment["quick"]
        target = manifest["stopping"]["target_half_width"]
    except (KeyError, TypeError):
        raise HarnessError(f"{run.path}/manifest.json: lacks what a resume needs (written by an older harness?)") from None
    if status == "complete":
        raise HarnessError(f"{run.path}: the run is complete; there is nothing to resume")
    spec, digest = spec_module.load_with_digest(experiment_path)
    if digest != experiment["sha256"]:
        raise HarnessError(f"{experiment_path}: changed since run {run.run_id} started (sha256 differs); "
                           "resuming would mix two experiments: start a new run")
    plan = make_plan(spec, quick, seed, target)
    measurements = [collect.measurement_from_json(record) for record in run.read_lines_json(TRIALS_FILE)]
    gathered = _Gathered(started=manifest.get("started") or _now(), measurements=measurements,
                         resumed_trials=len(measurements), cpu_restriction=manifest["hosts"].get("cpu_restriction"))
    return _run(spec, digest, experiment_path, load_inventory(inventory_path), plan, run, gathered, progress, signals)


TRIALS_FILE = "trials.jsonl"


def _run(spec, digest, experiment_path: Path, inventory: Inventory, plan: Plan, run: RunDirectory,
         gathered: _Gathered, progress: Progress | None, signals: StopSignals | None) -> RunOutcome:
    progress = progress or (lambda event, info: None)
    signals = signals or NoSignals()
    hosts_by_role = inventory.hosts_for(spec.roles)
    try:
        _measure(spec, experiment_path, inventory, hosts_by_role, plan, run, gathered, progress, signals)
    except HarnessError as exc:
        gathered.error = exc
    except KeyboardInterrupt:  # a signal that came before our handler was installed
        gathered.error = Interrupted("interrupted: the run stopped; hosts were restored")
    with signals.deferred():
        progress("stage", {"text": "analysing and writing the report"})
        outcome = _write_results(spec, digest, Path(experiment_path), inventory, hosts_by_role, plan, run, gathered)
    if gathered.error is not None:
        raise RunFailed(gathered.error, run.path)
    return outcome


def _measure(spec, experiment_path, inventory: Inventory, hosts_by_role, plan: Plan, run: RunDirectory,
             gathered: _Gathered, progress: Progress, signals: StopSignals) -> None:
    hosts = _unique_hosts(hosts_by_role)
    with ExitStack() as stack:
        sessions = {host.name: stack.enter_context(HostSession(host)) for host in hosts}
        progress("stage", {"text": f"checking {', '.join(sessions)}"})
        _check_reachable(sessions)
        gathered.topology = _topology(sessions, run)
        gathered.not_applicable = _unmet_requirements(spec, gathered.topology)
        if gathered.not_applicable:
            gathered.stop_reason = "no trials ran: the hosts cannot test this claim"
            return
        gathered.links = _describe_links(spec, hosts_by_role, sessions)
        _check_ports_free(spec, hosts_by_role, sessions)
        provisioner = Provisioner(inventory.path.resolve(), [h.name for h in hosts], run.ansible,
                                  signals.cancel_requested)
        progress("stage", {"text": "recording host settings (ansible: snapshot)"})
        with signals.deferred():
            gathered.state = provisioner.snapshot(list(spec.provision.sysctls),
                                                  {host.name: host.service_address for host in hosts})
        signals.check()
        restore_error = None
        run_error = None
        try:
            progress("stage", {"text": "provisioning: packages, builds, data, sysctls (ansible)"})
            with signals.deferred():
                workspace, gathered.tools = provisioner.apply(
                    spec, spec_module.workload_dir(spec, experiment_path), hosts_by_role, plan.parameters, run.run_id)
            signals.check()
            setting = TrialSetting(
                spec=spec, hosts_by_role=hosts_by_role, sessions=sessions, workspace=workspace,
                parameters=plan.parameters, workload_dir=spec_module.workload_dir(spec, experiment_path),
                raw_dir=run.raw, proxy_delay_ms=_proxy_delay(spec, gathered.links),
                cpu_restriction=_restriction(gathered.cpu_restriction, gathered.state),
            )
            progress("trials", {"total": plan.most_trials, "done": len(gathered.measurements)})

            def record(measurement):
                gathered.measurements.append(measurement)
                run.write_text(TRIALS_FILE, "".join(
                    json.dumps(collect.measurement_to_json(m)) + "\n" for m in gathered.measurements))

            _run_rounds(spec, plan, setting, gathered, progress, signals, record)
        except BaseException as exc:  # restore first, whatever stopped the run
            run_error = exc
        progress("stage", {"text": "restoring host settings (ansible: restore)"})
        with signals.deferred():
            try:
                provisioner.restore(gathered.state, Provisioner.workdir_for(run.run_id))
            except DriftError as exc:  # restored, but not every setting is as the snapshot found it
                gathered.drift = exc.drift
                restore_error = exc
            except HarnessError as exc:
                restore_error = exc
        if isinstance(run_error, HarnessError) and restore_error is not None:
            raise type(run_error)(f"{run_error}; restoring the hosts also failed: {restore_error}")
        if run_error is not None:
            raise run_error
        if restore_error is not None:
            raise restore_error
    signals.check()


def _run_rounds(spec, plan: Plan, setting: TrialSetting, gathered: _Gathered, progress: Progress,
                signals: StopSignals, record: Callable) -> None:
    """Run rounds of trials until the stopping rule is met; record why it stopped.
    Trials already measured (a resumed run) are skipped; the seed gives the same rounds."""
    stopping = plan.stopping
    of = f"of {plan.most_trials}" if stopping.minimum == stopping.maximum else f"of up to {plan.most_trials}"
    done = {m.order for m in gathered.measurements}
    started = time.monotonic()
    while True:
        for trial in plan.round(gathered.rounds):
            if trial.index in done:
                continue
            signals.check()
            progress("trial_start", {"index": trial.index, "variant": trial.variant,
                                     "condition": trial.condition.label})
            try:
                output = run_trial(trial, setting, signals)
            except Interrupted:
                raise
            except HarnessError as exc:
                raise type(exc)(f"trial {trial.index + 1} {of} ({trial.variant}): {exc}") from None
            measurement = collect.measure(output, spec.variants[trial.variant].load.parser, spec.warmup_values)
            record(measurement)
            progress("trial", {"index": trial.index, "variant": trial.variant, "condition": trial.condition.label,
                               "seconds": sum(measurement.values) / len(measurement.values)})
        gathered.rounds += 1
        if gathered.rounds < stopping.minimum:
            continue
        widths = _half_widths(spec, plan, gathered.measurements)
        if all(width is not None and width <= stopping.target for width in widths.values()):
            gathered.stop_reason = (f"every pair's {analyse.Thresholds().confidence:.0%} interval"
                                    f"{' in every condition' if len(plan.conditions) > 1 else ''} is within "
                                    f"±{stopping.target:.1%} of its ratio")
            return
        if gathered.rounds >= stopping.maximum:
            gathered.stop_reason = (f"the maximum of {stopping.maximum} repetitions was reached before the intervals "
                                    f"narrowed to ±{stopping.target:.1%}")
            return
        elapsed = time.monotonic() - started
        if stopping.budget_s is not None and elapsed * (gathered.rounds + 1) / gathered.rounds > stopping.budget_s:
            gathered.stop_reason = (f"another round would exceed the time budget of {stopping.budget_s:g} s "
                                    f"before the intervals narrowed to ±{stopping.target:.1%}")
            return
        signals.check()


def _half_widths(spec, plan: Plan, measurements) -> dict[tuple[str, str], float | None]:
    values = collect.values_frame(measurements)
    widths = {}
    for condition in plan.conditions:
        own = values[values["condition"] == condition.label]
        for pair in spec.pairs:
            verdict = analyse.compare_pair(own, pair=pair.name, baseline=pair.baseline, treatment=pair.treatment,
                                           claimed_ratio=spec.claim.claimed_ratio, better=spec.claim.better)
            widths[(pair.name, condition.label)] = verdict.half_width
    return widths


TOPOLOGY_SCRIPT = r"""
echo "cpus $(getconf _NPROCESSORS_ONLN)"
echo "numa_nodes $(ls -d /sys/devices/system/node/node[0-9]* 2>/dev/null | wc -l)"
echo "--- lscpu"; lscpu 2>/dev/null
echo "--- NUMA nodes (cpulist)"
for node in /sys/devices/system/node/node[0-9]*; do [ -d "$node" ] && echo "${node##*/}: $(cat "$node/cpulist")"; done
if command -v numactl >/dev/null; then echo "--- numactl -H"; numactl -H 2>&1; fi
if command -v hwloc-ls >/dev/null; then echo "--- hwloc-ls"; hwloc-ls --of console 2>&1; fi
true
"""


def _topology(sessions: dict[str, HostSession], run: RunDirectory) -> dict[str, dict]:
    """Each host's CPUs and NUMA nodes; the whole description is kept in raw/."""
    topology = {}
    for name, session in sessions.items():
        text = session.shell(TOPOLOGY_SCRIPT, timeout=60, shown="read the CPU topology").stdout
        run.write_text(f"raw/topology-{name}.txt", text)
        counts = dict(line.split(" ", 1) for line in text.splitlines()[:2] if " " in line)
        topology[name] = {key: int(counts[key]) if counts.get(key, "").strip().isdigit() else None
                          for key in ("cpus", "numa_nodes")}
    return topology


def _unmet_requirements(spec, topology: dict[str, dict]) -> str | None:
    """The first requirement of the experiment a host does not meet, said in words."""
    for host, facts in topology.items():
        for key, words in (("numa_nodes", "NUMA node"), ("cpus", "CPU")):
            needed = getattr(spec.requires, key)
            have = facts.get(key)
            if needed is not None and have is not None and have < needed:
                return (f"{host} has {have} {words}{'s' if have != 1 else ''}; the claim needs at least {needed} "
                        f"(requires.{key}), so this host cannot test it. Its topology: raw/topology-{host}.txt.")
    return None


def _check_reachable(sessions: dict[str, HostSession]) -> None:
    """Every host answers before anything is changed anywhere; checked in parallel
    so that several dead hosts cost one connect timeout, not one each."""
    with ThreadPoolExecutor(max_workers=min(16, len(sessions))) as pool:
        futures = {name: pool.submit(session.run, ["true"], 30) for name, session in sessions.items()}
    for future in futures.values():
        future.result()  # raises the first host's HostError


def _describe_links(spec, hosts_by_role, sessions: dict[str, HostSession]) -> dict[str, str]:
    """How each load generator reaches its server: the route's device and its properties."""
    links = {}
    for variant in spec.variants.values():
        if variant.server is None:
            continue
        client = hosts_by_role[variant.load.role][0]
        server = hosts_by_role[variant.server.role][0]
        key = f"link {client.name} -> {server.name}"
        if key not in links:
            links[key] = collect.describe_link(sessions[client.name], server.service_address)
    return links


def _restriction(cpus: str | None, state: HostState | None) -> tuple[int, ...] | None:
    """--cpus as CPU numbers, checked against every host's CPU count."""
    if cpus is None:
        return None
    try:
        restriction = parse_cpu_list(cpus)
    except ValueError:
        raise HarnessError(f"--cpus {cpus!r}: give CPU numbers and ranges, e.g. 0 or 0-1 or 0,2") from None
    for host, fact in (state.facts if state else {}).items():
        cores = fact.get("cores")
        if isinstance(cores, int) and cores and max(restriction) >= cores:
            raise HarnessError(f"{host}: --cpus {cpus} names CPU {max(restriction)}, but the host has {cores} CPUs")
    return restriction


def _proxy_delay(spec, links: dict[str, str] | None) -> float | None:
    """The experiment's delay, when the links lack netem to give it: the proxy adds it."""
    if not spec.link.delay_ms:
        return None
    if links and all("netem" in description for description in links.values()):
        return None
    return spec.link.delay_ms


def _check_ports_free(spec, hosts_by_role, sessions: dict[str, HostSession]) -> None:
    for name, variant in spec.variants.items():
        for host in hosts_by_role[variant.server.role][:1] if variant.server else ():
            if sessions[host.name].port_in_use(variant.server.port, variant.server.protocol):
                raise HarnessError(
                    f"{host.name}: port {variant.server.port} (variants.{name}.server.port) is already in use; "
                    "stop what listens there or pick another port"
                )


# --- results ----------------------------------------------------------------


def _write_results(spec, digest, experiment_path, inventory, hosts_by_role, plan, run, gathered) -> RunOutcome:
    measurements = gathered.measurements
    values = collect.values_frame(measurements)
    costs = collect.costs_frame(measurements)
    run.write_text("measurements.csv", values.to_csv(index=False))
    run.write_text("costs.csv", costs.to_csv(index=False))
    swept = len(plan.conditions) > 1
    for number, condition in enumerate(plan.conditions):
        for variant in plan.variants:
            collect.write_pyperf(measurements, variant, spec.claim.id,
                                 run.pyperf_file(variant, number if swept else None), condition.label)

    gate_rows = [row for m in measurements
                 for row in collect.gates(m, spec.analysis.gate_load_cpu, spec.analysis.gate_steal,
                                          spec.analysis.gate_errors,
                                          has_server=spec.variants[m.variant].server is not None)]
    run.write_text("gates.csv", pd.DataFrame(gate_rows, columns=GATE_COLUMNS).to_csv(index=False))
    run.write_json("drift.json", [asdict(item) for item in gathered.drift])
    verdicts, pyperf_lines, thresholds_by_condition = [], [], {}
    for number, condition in enumerate(plan.conditions):
        own = values[values["condition"] == condition.label]
        thresholds = thresholds_by_condition[condition.label] = _thresholds(spec, own)
        for pair in spec.pairs:
            verdict = analyse.compare_pair(
                own, pair=pair.name, baseline=pair.baseline, treatment=pair.treatment,
                claimed_ratio=spec.claim.claimed_ratio, better=spec.claim.better, thresholds=thresholds,
                invalid=_invalid(gate_rows, pair, condition.label), condition=condition.label,
                not_applicable=gathered.not_applicable)
            verdicts.append(verdict)
            pyperf_lines.append(_pyperf_compare(run, pair, verdict, number if swept else None))
    thresholds = thresholds_by_condition[plan.conditions[0].label]
    summary_verdict = analyse.claim_verdict(verdicts)
    status = _status(gathered.error)
    conditions = _conditions(spec, hosts_by_role, plan, gathered)
    run.write_json("summary.json", {
        "claim_id": spec.claim.id, "statement": spec.claim.statement, "claimed_ratio": spec.claim.claimed_ratio,
        "better": spec.claim.better, "status": status,
        "sweep": {key: list(values) for key, values in spec_module.sweep_for(spec, plan.quick).items()},
        **summary_verdict.as_dict(),
    })
    run.write_json("verdicts.json", [
        {
            "claim_id": spec.claim.id,
            "better": spec.claim.better,
            "condition": dict(_condition_of(plan, v.condition).values),
            "condition_label": v.condition,
            "pair": [v.baseline, v.treatment],
            "pair_name": v.pair,
            "claimed_ratio": v.claimed_ratio,
            "measured_ratio": v.measured_ratio,
            "ci_low": v.ci_low,
            "ci_high": v.ci_high,
            "confidence": v.confidence,
            "verdict": v.verdict,
            "rule": v.rule,
            "reason": v.reason,
            "n_baseline": v.n_baseline,
            "n_treatment": v.n_treatment,
            "half_width": v.half_width,
            "runs_needed": v.runs_needed,
            "k": thresholds_by_condition[v.condition].k,
            "margin": thresholds_by_condition[v.condition].margin,
            "margin_source": thresholds_by_condition[v.condition].margin_source,
            "pyperf_compare_to": line["line"],
            "pyperf_note": line["note"],
            "conditions": conditions,
        }
        for v, line in zip(verdicts, pyperf_lines)
    ])
    finished = _now()
    manifest = _manifest(spec, digest, experiment_path, inventory, plan, run, gathered, status, finished, costs)
    run.write_json("manifest.json", manifest)
    # With a sweep, tables and charts show each variant under each condition as its own series.
    shown_values, series = _series(values, plan)
    shown_costs, _ = _series(costs, plan)
    summary = analyse.summarise(shown_values)
    labels = [label for label, _ in series]
    context = {
        "run_id": run.run_id,
        "status": status,
        "started": gathered.started,
        "finished": finished,
        "claim": {
            "id": spec.claim.id, "statement": spec.claim.statement, "source_file": spec.claim.source.file,
            "source_section": spec.claim.source.section, "claimed_ratio": spec.claim.claimed_ratio,
            "metric": spec.claim.metric, "unit": spec.claim.unit, "better": spec.claim.better,
        },
        "conditions": conditions,
        "claim_verdict": summary_verdict,
        "sweep": spec_module.sweep_for(spec, plan.quick),
        "variants": [{"name": label, "description": spec.variants[name].description} for label, name in series],
        "summary": summary,
        "costs": _cost_table(shown_costs, [label for label, _ in series]),
        "softirqs": _softirq_spread(measurements, plan, [label for label, _ in series]),
        "verdicts": verdicts,
        "thresholds": thresholds,
        "charts": {
            "values": charts.run_values_svg(shown_values, labels, spec.claim.unit) if not values.empty else "",
            "ratios": charts.ratio_svg(verdicts, thresholds) if not values.empty else "",
            "sequence": charts.run_sequence_svg(shown_values, labels, spec.claim.unit) if not values.empty else "",
            "distribution": charts.distribution_svg(shown_values, labels, spec.claim.unit) if not values.empty else "",
        },
        "gates": gate_rows,
        "pyperf": pyperf_lines,
        "stopping": {
            "reason": gathered.stop_reason or "the run stopped early",
            "repetitions": gathered.rounds,
            "target_half_width": plan.stopping.target,
            "achieved": {v.label: v.half_width for v in verdicts},
        },
        "files": [{"label": name, "href": name} for name in run.files() if name != "index.html"],
        "notes": _notes(spec, hosts_by_role, gathered, measurements),
        "drift": [asdict(item) for item in gathered.drift],
    }
    run.write_text("index.html", report.render_report(context, TEMPLATES))
    # Last: the sha256 of every file the run wrote, for `harness verify`.
    run.write_json("manifest.json", {**manifest, "file_sha256": run.digests()})
    return RunOutcome(run_dir=run.path, status=status, verdicts=verdicts, claim_verdict=summary_verdict)


def _series(frame: pd.DataFrame, plan: Plan) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """(label, variant) for every variant under every condition, and the frame with its
    variant column renamed to those labels; unchanged when nothing is swept."""
    if len(plan.conditions) == 1:
        return frame, [(name, name) for name in plan.variants]
    series = [(f"{name} · {condition.label}", name, condition.label)
              for condition in plan.conditions for name in plan.variants]
    renamed = frame.copy()
    renamed["variant"] = [f"{variant} · {condition}" for variant, condition in zip(frame["variant"], frame["condition"])]
    return renamed, [(label, name) for label, name, _ in series]


GATE_COLUMNS = ["variant", "condition", "run", "gate", "value", "limit", "passed", "detail"]


MARGIN_CAP = 0.05  # a noisy host never makes a significant gain above 5% count as "no gain"


def _thresholds(spec, values) -> analyse.Thresholds:
    """k from the experiment; the no-difference margin from it too, or else from the
    noisiest baseline's own run-to-run spread (an A/A estimate on this host), capped
    at MARGIN_CAP: noise already widens the interval, it must not also widen "no gain"."""
    if spec.analysis.margin is not None:
        return analyse.Thresholds(k=spec.analysis.k, margin=spec.analysis.margin, margin_source="experiment file")
    defaults = analyse.Thresholds(k=spec.analysis.k)
    noise = {}
    for pair in spec.pairs:
        if values.loc[values["variant"] == pair.baseline, "run"].nunique() >= 2:
            noise[pair.baseline] = analyse.noise_margin(values, pair.baseline, defaults)
    if not noise:
        return defaults
    noisiest = max(noise, key=noise.get)
    if noise[noisiest] > MARGIN_CAP:
        return analyse.Thresholds(k=spec.analysis.k, margin=MARGIN_CAP,
                                  margin_source=f"cap; A/A noise of {noisiest} is {noise[noisiest]:.3f}")
    return analyse.Thresholds(k=spec.analysis.k, margin=noise[noisiest], margin_source=f"A/A noise of {noisiest}")


def _condition_of(plan: Plan, label: str):
    return next(condition for condition in plan.conditions if condition.label == label)


def _invalid(gate_rows: list[dict], pair, condition: str = "") -> str | None:
    """Why the pair's runs cannot be trusted: the first failed gate, and how many failed."""
    failed = [row for row in gate_rows if not row["passed"] and row["variant"] in (pair.baseline, pair.treatment)
              and row["condition"] == condition]
    if not failed:
        return None
    first = failed[0]
    return (f"{first['gate']} gate failed in run {first['run']} of {first['variant']}: {first['detail']}"
            f" ({len(failed)} failed gate{'s' if len(failed) > 1 else ''} in this pair; gates.csv)")


def _pyperf_compare(run: RunDirectory, pair, verdict, condition: int | None = None) -> dict:
    """pyperf's own comparison of the two files, kept beside ours as a cross-check."""
    files = [run.pyperf_file(pair.baseline, condition), run.pyperf_file(pair.treatment, condition)]
    if not all(path.exists() for path in files):
        return {"pair": verdict.label, "line": "no pyperf files (no completed runs)", "note": None}
    result = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", *map(str, files)],
                            capture_output=True, text=True, timeout=120)
    output = (result.stdout.strip() or result.stderr.strip())
    suffix = "" if condition is None else f"-c{condition}"
    run.write_text(f"pyperf/compare-{pair.name}{suffix}.txt", output + "\n")
    line = output.splitlines()[-1] if output else "pyperf compare_to printed nothing"
    return {"pair": verdict.label, "line": line, "note": analyse.cross_check(verdict, line)}


def _status(error: HarnessError | None) -> str:
    if error is None:
        return "complete"
    if isinstance(error, Interrupted):
        return "interrupted"
    return f"failed: {error}"


def _softirq_spread(measurements, plan: Plan, labels: list[str]) -> list[dict]:
    """Per variant (and condition) and host: the receive softirqs (NET_RX) each CPU ran over
    the load windows, summed over the trials, and each CPU's share: how evenly the kernel
    spread the receive work."""
    totals: dict[tuple[str, str], dict[int, float]] = {}
    for m in measurements:
        label = m.variant if len(plan.conditions) == 1 else f"{m.variant} · {m.condition}"
        for host, changes in m.host_changes.items():
            per_cpu = totals.setdefault((label, host), {})
            for key, value in changes.items():
                if key.startswith("net_rx_cpu"):
                    cpu = int(key.removeprefix("net_rx_cpu"))
                    per_cpu[cpu] = per_cpu.get(cpu, 0.0) + value
    rows = []
    position = {label: i for i, label in enumerate(labels)}
    for (label, host), per_cpu in sorted(totals.items(), key=lambda item: (position.get(item[0][0], 0), item[0][1])):
        total = sum(per_cpu.values())
        cpus = sorted(per_cpu)
        rows.append({"variant": label, "host": host, "total": int(total),
                     "counts": [int(per_cpu[cpu]) for cpu in cpus],
                     "shares": [per_cpu[cpu] / total if total else None for cpu in cpus], "cpus": cpus})
    return rows


def _cost_table(costs, variants: list[str]) -> list[dict]:
    """Mean CPU cost per variant over its trials."""
    rows = []
    for variant in variants:
        own = costs[costs["variant"] == variant]
        if own.empty:
            continue
        rows.append({
            "variant": variant,
            "trials": len(own),
            "server_cpu_s_per_gib": float(own["server_cpu_s_per_gib"].mean()),
            "server_cpu_s_per_unit": float(own["server_cpu_s_per_unit"].mean()),
            "units": int(own["units"].sum()),
            "errors": int(own["errors"].sum()),
            "client_cpu_seconds": float(own["client_cpu_seconds"].mean()) if own["client_cpu_seconds"].notna().any() else None,
            "harness_cpu_seconds": float(own["harness_cpu_seconds"].mean()),
            "wall_seconds": float(own["wall_seconds"].mean()),
        })
    return rows


def _conditions(spec, hosts_by_role, plan: Plan, gathered: _Gathered) -> dict[str, str]:
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
        conditions[f"topology ({host})"] = (f"{facts.get('cpus')} CPUs, {facts.get('numa_nodes')} NUMA "
                                            f"node{'s' if facts.get('numa_nodes') != 1 else ''} "
                                            f"(raw/topology-{host}.txt)")
    conditions.update(gathered.links or {})
    for key, value in plan.parameters.items():
        conditions[f"parameter {key}"] = str(value)
    for key, values in spec_module.sweep_for(spec, plan.quick).items():
        conditions[f"swept {key}"] = ", ".join(map(str, values))
    conditions["repetitions"] = f"{gathered.rounds} (at least {plan.stopping.minimum}, at most {plan.stopping.maximum})"
    conditions["trial order seed"] = str(plan.seed)
    conditions["warm-up values per trial"] = str(spec.warmup_values)
    conditions["profile"] = "quick" if plan.quick else "full"
    for name in plan.variants:
        variant = spec.variants[name]
        restriction = parse_cpu_list(gathered.cpu_restriction) if gathered.cpu_restriction else None
        server_cpus = cpus_for(variant.server.cpus, restriction) if variant.server else "(no server)"
        conditions[f"{name} CPUs"] = (f"server {server_cpus or 'any'}, "
                                      f"load {cpus_for(variant.load.cpus, restriction) or 'any'}")
    if gathered.cpu_restriction:
        conditions["CPU restriction (--cpus)"] = gathered.cpu_restriction
    if spec.link.delay_ms:
        via = ("netem in the link" if _proxy_delay(spec, gathered.links) is None
               else "harness/hosts/delay_proxy.py on the client host (no netem)")
        conditions["added delay"] = f"{spec.link.delay_ms:g} ms each way, by {via}"
    for key, value in spec.provision.sysctls.items():
        conditions[f"sysctl {key}"] = str(value)
    for host, tools in (gathered.tools or {}).items():
        for tool, version in tools.items():
            conditions[f"{tool} ({host})"] = str(version)
    return conditions


def _notes(spec, hosts_by_role, gathered: _Gathered, measurements) -> list[str]:
    notes = list(spec.notes)
    if gathered.drift:
        notes.append(f"The hosts did not return to their snapshot: {len(gathered.drift)} setting"
                     f"{'s' if len(gathered.drift) != 1 else ''} differ after restore (Host state after the run, "
                     "drift.json). The measurements themselves completed.")
    elif gathered.error is not None:
        notes.append(f"The run stopped early: {gathered.error}. The numbers above are the trials that completed.")
    if gathered.not_applicable:
        notes.append(f"Not applicable here: {gathered.not_applicable}")
    if spec.claim.ceiling == "cpus" and gathered.topology:
        fewest = min((facts["cpus"] for facts in gathered.topology.values() if facts.get("cpus")), default=None)
        if gathered.cpu_restriction:
            fewest = len(parse_cpu_list(gathered.cpu_restriction))
        if fewest:
            verdict = ("more than this host can give, so no run here can reproduce it"
                       if spec.claim.claimed_ratio > fewest else "within what this host can give")
            notes.append(f"Ceiling: spreading work over {fewest} CPUs can at best make it {fewest}x faster; "
                         f"the claimed {spec.claim.claimed_ratio:g}x is {verdict}.")
    roles = {role: hosts[0] for role, hosts in hosts_by_role.items()}
    if len({host.name for host in roles.values()}) == 1:
        notes.append("Server and load generator share one host over loopback: the receiver's kernel work "
                     "runs on the sender's CPU, so CPU pinning separates the processes but not all their costs.")
    if measurements:
        window_cpu = sum(m.harness_cpu_seconds for m in measurements)
        window_wall = sum(m.wall_seconds for m in measurements)
        notes.append(f"The harness used {window_cpu:.3f} CPU s during {window_wall:.1f} s of load windows "
                     "(costs.csv, manifest.json).")
    return notes


def _manifest(spec, digest, experiment_path, inventory, plan, run, gathered, status, finished, costs) -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "format_version": FORMAT_VERSION,
        "run_id": run.run_id,
        "status": status,
        "started": gathered.started,
        "finished": finished,
        "resumed_trials": gathered.resumed_trials,
        "experiment": {"file": str(experiment_path), "path": str(Path(experiment_path).resolve()), "sha256": digest, "claim_id": spec.claim.id,
                       "quick": plan.quick, "repetitions": plan.repetitions, "parameters": plan.parameters},
        "inventory": str(inventory.path),
        "harness": {"version": _version("harness"), "git_commit": _git_commit()},
        "python": {"version": platform.python_version(), "packages": {name: _version(name) for name in PACKAGES}},
        "hosts": {
            "facts": gathered.state.facts if gathered.state else {},
            "sysctls_before": gathered.state.sysctls_before if gathered.state else {},
            "sysctls_applied": dict(spec.provision.sysctls),
            "settings_before": gathered.state.settings_before if gathered.state else {},
            "state_notes": gathered.state.notes if gathered.state else {},
            # Part of the host's fingerprint: a run restricted to fewer CPUs is other hardware.
            "cpu_restriction": gathered.cpu_restriction,
            "topology": gathered.topology or {},
            "tools": gathered.tools or {},
        },
        "trials": {"planned": len(plan.trials), "most": plan.most_trials, "completed": len(gathered.measurements)},
        "order_seed": plan.seed,
        "stopping": {"minimum": plan.stopping.minimum, "maximum": plan.stopping.maximum,
                     "target_half_width": plan.stopping.target, "time_budget_s": plan.stopping.budget_s,
                     "rounds": gathered.rounds, "reason": gathered.stop_reason},
        "harness_costs": {
            "cpu_seconds": round(own.ru_utime + own.ru_stime, 3),
            "children_cpu_seconds": round(children.ru_utime + children.ru_stime, 3),
            "cpu_seconds_in_load_windows": round(float(costs["harness_cpu_seconds"].sum()), 3),
            "load_window_seconds": round(float(costs["wall_seconds"].sum()), 3),
            "peak_rss_mib": round(own.ru_maxrss / 1024, 1),
        },
    }


def _unique_hosts(hosts_by_role) -> list[Host]:
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
    try:
        result = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        # --no-optional-locks: a plain `git status` takes .git/index.lock, a write outside the run.
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(PROJECT_ROOT), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
