"""How a run describes itself: the report's conditions table and notes, and the manifest.

Everything here is read from the run's context (the experiment, the plan, the hosts) and
what it gathered; nothing is measured or written."""

from __future__ import annotations

import platform
import resource
import subprocess
from importlib import metadata
from pathlib import Path

from harness import controller, resources
from harness.cpuset import placed
from harness.results import store
from harness.results.store import RunDirectory
from harness.run import preflight
from harness.run.context import Gathered, RunContext

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


def describe_conditions(context: RunContext, gathered: Gathered) -> dict[str, str]:
    """The report's conditions table: hosts, links, parameters, sweep, CPUs, sysctls, tools."""
    spec, hosts_by_role, plan = context.spec, context.hosts_by_role, context.plan
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


def run_notes(context: RunContext, gathered: Gathered) -> list[str]:
    """The report's notes: the experiment's own, then what this run adds (drift, an early stop,
    not applicable, the claim's ceiling on these CPUs, loopback, the harness's own cost)."""
    spec, hosts_by_role, plan = context.spec, context.hosts_by_role, context.plan
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


def manifest_of(
    context: RunContext, gathered: Gathered, status: str, finished: str | None, costs, status_by_order: dict[int, str]
) -> store.Manifest:
    """The run's manifest as it stands: `status` and `finished` say whether it is still running."""
    spec, plan, run, hosts_by_role = context.spec, context.plan, context.run, context.hosts_by_role
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
            file=str(context.experiment_path),
            path=str(Path(context.experiment_path).resolve()),
            sha256=context.digest,
            claim_id=spec.claim.id,
            quick=plan.profile.quick,
            repetitions=plan.profile.repetitions,
            parameters=plan.profile.parameters,
        ),
        inventory=str(context.inventory.path),
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
        timing=gathered.clock.record(gathered.trials),
    )


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
