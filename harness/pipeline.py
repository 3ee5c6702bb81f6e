"""run_experiment(): the stages in order -- the table of contents of a run.

    spec -> plan -> provision -> execute -> collect -> analyse -> report

Whatever happens after the run directory exists (a crash, a busy host,
Ctrl-C), the hosts are restored and everything gathered so far is analysed and
written, then the error goes up to the CLI.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from harness import analyse, charts, collect, report, spec as spec_module
from harness.errors import HarnessError, Interrupted
from harness.execute import TrialSetting, run_trial
from harness.interrupt import NoSignals, StopSignals
from harness.inventory import Host, Inventory, load as load_inventory
from harness.plan import Plan, make_plan
from harness.provision import HostState, Provisioner, Workspace
from harness.remote import HostSession
from harness.store import FORMAT_VERSION, RunDirectory

PROJECT_ROOT = spec_module.PROJECT_ROOT
TEMPLATES = PROJECT_ROOT / "templates"
PACKAGES = ("harness", "ansible-runner", "ansible-core", "fabric", "paramiko", "invoke", "pyperf", "pandas",
            "numpy", "scipy", "jinja2", "pydantic", "matplotlib", "click", "rich")

# progress(event, info): "stage" {text}, "trials" {total}, "trial" {index, variant, seconds}
Progress = Callable[[str, dict], None]


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    status: str
    verdicts: list[analyse.PairVerdict]


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


def run_experiment(experiment_path: str | Path, inventory_path: str | Path, out_dir: str | Path, quick: bool = False,
                   progress: Progress | None = None, signals: StopSignals | None = None) -> RunOutcome:
    progress = progress or (lambda event, info: None)
    signals = signals or NoSignals()
    spec, digest = spec_module.load_with_digest(experiment_path)
    inventory = load_inventory(inventory_path)
    hosts_by_role = inventory.hosts_for(spec.roles)
    plan = make_plan(spec, quick)
    run = RunDirectory.create(Path(out_dir), spec.claim.id)
    gathered = _Gathered(started=_now(), measurements=[])
    try:
        _measure(spec, Path(experiment_path), inventory, hosts_by_role, plan, run, gathered, progress, signals)
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
        gathered.links = _describe_links(spec, hosts_by_role, sessions)
        _check_ports_free(spec, hosts_by_role, sessions)
        provisioner = Provisioner(inventory.path.resolve(), [h.name for h in hosts], run.ansible,
                                  signals.cancel_requested)
        progress("stage", {"text": "recording host settings (ansible: snapshot)"})
        with signals.deferred():
            gathered.state = provisioner.snapshot(list(spec.provision.sysctls))
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
            )
            progress("trials", {"total": len(plan.trials)})
            for trial in plan.trials:
                signals.check()
                try:
                    output = run_trial(trial, setting, signals)
                except Interrupted:
                    raise
                except HarnessError as exc:
                    raise type(exc)(f"trial {trial.index + 1} of {len(plan.trials)} ({trial.variant}): {exc}") from None
                variant = spec.variants[trial.variant]
                measurement = collect.measure(output, variant.load.parser, spec.warmup_values)
                gathered.measurements.append(measurement)
                progress("trial", {"index": trial.index, "variant": trial.variant,
                                   "seconds": sum(measurement.values) / len(measurement.values)})
        except BaseException as exc:  # restore first, whatever stopped the run
            run_error = exc
        progress("stage", {"text": "restoring host settings (ansible: restore)"})
        with signals.deferred():
            try:
                provisioner.restore(gathered.state, Provisioner.workdir_for(run.run_id))
            except HarnessError as exc:
                restore_error = exc
        if isinstance(run_error, HarnessError) and restore_error is not None:
            raise type(run_error)(f"{run_error}; restoring the hosts also failed: {restore_error}")
        if run_error is not None:
            raise run_error
        if restore_error is not None:
            raise restore_error
    signals.check()


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
        client = hosts_by_role[variant.load.role][0]
        server = hosts_by_role[variant.server.role][0]
        key = f"link {client.name} -> {server.name}"
        if key not in links:
            links[key] = collect.describe_link(sessions[client.name], server.service_address)
    return links


def _proxy_delay(spec, links: dict[str, str] | None) -> float | None:
    """The experiment's delay, when the links lack netem to give it: the proxy adds it."""
    if not spec.link.delay_ms:
        return None
    if links and all("netem" in description for description in links.values()):
        return None
    return spec.link.delay_ms


def _check_ports_free(spec, hosts_by_role, sessions: dict[str, HostSession]) -> None:
    for name, variant in spec.variants.items():
        for host in hosts_by_role[variant.server.role][:1]:
            if sessions[host.name].port_in_use(variant.server.port):
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
    for variant in plan.variants:
        collect.write_pyperf(measurements, variant, spec.claim.id, run.pyperf_file(variant))

    thresholds = analyse.Thresholds()
    verdicts = [
        analyse.compare_pair(values, pair=pair.name, baseline=pair.baseline, treatment=pair.treatment,
                             claimed_ratio=spec.claim.claimed_ratio, better=spec.claim.better, thresholds=thresholds)
        for pair in spec.pairs
    ]
    status = _status(gathered.error)
    conditions = _conditions(spec, hosts_by_role, plan, gathered)
    run.write_json("verdicts.json", [
        {
            "claim_id": spec.claim.id,
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
            "conditions": conditions,
        }
        for v in verdicts
    ])
    finished = _now()
    run.write_json("manifest.json", _manifest(spec, digest, experiment_path, inventory, plan, run, gathered,
                                              status, finished, costs))
    summary = analyse.summarise(values)
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
        "variants": [{"name": name, "description": spec.variants[name].description} for name in plan.variants],
        "summary": summary,
        "costs": _cost_table(costs, plan.variants),
        "verdicts": verdicts,
        "thresholds": thresholds,
        "charts": {
            "values": charts.run_values_svg(values, plan.variants, spec.claim.unit) if not values.empty else "",
            "ratios": charts.ratio_svg(verdicts, thresholds) if not values.empty else "",
        },
        "files": [{"label": name, "href": name} for name in run.files() if name != "index.html"],
        "notes": _notes(spec, hosts_by_role, gathered, measurements),
    }
    run.write_text("index.html", report.render_report(context, TEMPLATES))
    return RunOutcome(run_dir=run.path, status=status, verdicts=verdicts)


def _status(error: HarnessError | None) -> str:
    if error is None:
        return "complete"
    if isinstance(error, Interrupted):
        return "interrupted"
    return f"failed: {error}"


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
    conditions.update(gathered.links or {})
    for key, value in plan.parameters.items():
        conditions[f"parameter {key}"] = str(value)
    conditions["repetitions"] = str(plan.repetitions)
    conditions["warm-up values per trial"] = str(spec.warmup_values)
    conditions["profile"] = "quick" if plan.quick else "full"
    for name in plan.variants:
        variant = spec.variants[name]
        conditions[f"{name} CPUs"] = f"server {variant.server.cpus or 'any'}, load {variant.load.cpus or 'any'}"
    if spec.link.delay_ms:
        via = ("netem in the link" if _proxy_delay(spec, gathered.links) is None
               else "harness/delay_proxy.py on the client host (no netem)")
        conditions["added delay"] = f"{spec.link.delay_ms:g} ms each way, by {via}"
    for key, value in spec.provision.sysctls.items():
        conditions[f"sysctl {key}"] = str(value)
    for host, tools in (gathered.tools or {}).items():
        for tool, version in tools.items():
            conditions[f"{tool} ({host})"] = str(version)
    return conditions


def _notes(spec, hosts_by_role, gathered: _Gathered, measurements) -> list[str]:
    notes = []
    if gathered.error is not None:
        notes.append(f"The run stopped early: {gathered.error}. The numbers above are the trials that completed.")
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
        "experiment": {"file": str(experiment_path), "sha256": digest, "claim_id": spec.claim.id,
                       "quick": plan.quick, "repetitions": plan.repetitions, "parameters": plan.parameters},
        "inventory": str(inventory.path),
        "harness": {"version": _version("harness"), "git_commit": _git_commit()},
        "python": {"version": platform.python_version(), "packages": {name: _version(name) for name in PACKAGES}},
        "hosts": {
            "facts": gathered.state.facts if gathered.state else {},
            "sysctls_before": gathered.state.sysctls_before if gathered.state else {},
            "sysctls_applied": dict(spec.provision.sysctls),
            "tools": gathered.tools or {},
        },
        "trials": {"planned": len(plan.trials), "completed": len(gathered.measurements)},
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
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
