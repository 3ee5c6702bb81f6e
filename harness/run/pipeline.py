"""run_experiment(): the stages in order -- the table of contents of a run.

    spec -> plan -> lock hosts -> snapshot -> journal -> provision -> execute -> restore
         -> collect -> analyse -> report

Whatever happens after the run directory exists (a crash, a busy host,
Ctrl-C), the hosts are restored and everything gathered so far is analysed and
written, then the error goes up to the CLI. A controller killed outright runs none
of that: the manifest written as the run starts (status "running") lets
`harness run --resume` finish it, and each host's journal (harness/hosts/journal.py),
written before anything changes there, lets `harness restore` or the next run on
that host put it back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from harness import controller
from harness.cpuset import CpuListError, CpuSet
from harness.errors import HarnessError, Interrupted
from harness.hosts.hoststate import DriftError
from harness.hosts.inventory import load as load_inventory
from harness.hosts.journal import HostLock, new_journal
from harness.hosts.provision import Provisioner
from harness.hosts.recovery import recover
from harness.hosts.remote import HostSession
from harness.results import analyse, store
from harness.results.store import RunDirectory
from harness.run import collect, gates, preflight
from harness.run import spec as spec_module
from harness.run.context import Gathered, RunContext, RunOptions, now, unique_hosts
from harness.run.execute import TrialSetting, run_trial
from harness.run.finish import RunOutcome, judge_pair, write_results, write_running
from harness.run.interrupt import NoSignals, StopSignals
from harness.run.plan import Plan, make_plan
from harness.run.profile import Retries
from harness.run.timing import StageClock

# progress(event, info): "stage" {text}, "trials" {total}, "trial" {index, variant, seconds}
Progress = Callable[[str, dict], None]


class RunFailed(HarnessError):
    """The run stopped early; its partial results are in `run_dir`."""

    def __init__(self, cause: HarnessError, run_dir: Path):
        super().__init__(f"{cause} (results so far: {run_dir})")
        self.cause = cause
        self.run_dir = run_dir


def run_experiment(
    experiment_path: str | Path,
    inventory_path: str | Path,
    out_dir: str | Path,
    quick: bool = False,
    progress: Progress | None = None,
    signals: StopSignals | None = None,
    seed: int | None = None,
    target_half_width: float | None = None,
    cpus: CpuSet | None = None,
    retries: Retries | None = None,
    wait_seconds: float = 0.0,
    fake_steal: Callable | None = None,
) -> RunOutcome:
    """Run an experiment; `seed` fixes the trial order (random and recorded when None),
    `target_half_width` overrides the experiment's adaptive target, `cpus` (--cpus "0", "0-1")
    restricts servers and load generators to those CPUs, `retries` (--retries) overrides
    analysis.retries; a host another run holds is waited for up to `wait_seconds` (--wait),
    else the run stops at once. `fake_steal` is a seam for tests only (TrialSetting.fake_steal)."""
    clock = StageClock()
    clock.enter("start-up")
    spec, digest = spec_module.load_with_digest(experiment_path)
    inventory = load_inventory(inventory_path)
    inventory.hosts_for(spec.roles)  # a missing role fails before a run directory exists
    plan = make_plan(
        spec, quick, seed if seed is not None else secrets.randbelow(2**31), target_half_width, cpus, retries
    )
    run = RunDirectory.create(Path(out_dir), spec.claim.id)
    context = RunContext(
        spec,
        digest,
        Path(experiment_path),
        inventory,
        inventory.hosts_for(spec.roles),
        plan,
        run,
        RunOptions(wait_seconds, fake_steal),
    )
    return _run(context, Gathered(started=now(), trials=[], clock=clock), progress, signals)


def resume_experiment(
    run_dir: str | Path,
    inventory_path: str | Path,
    progress: Progress | None = None,
    signals: StopSignals | None = None,
    wait_seconds: float = 0.0,
    fake_steal: Callable | None = None,
) -> RunOutcome:
    """Finish the remaining trials of an interrupted or failed run, in its own directory,
    with its experiment (unchanged since: same sha256), profile, seed and stopping rule."""
    run = RunDirectory.existing(Path(run_dir))
    manifest = run.read_manifest()
    clock = StageClock(manifest.timing)  # adds to the seconds the first part recorded
    clock.enter("start-up")
    experiment = manifest.experiment
    if manifest.status == "complete":
        raise HarnessError(f"{run.path}: the run is complete; there is nothing to resume")
    if manifest.status == "running" and controller.alive(manifest.controller):
        raise HarnessError(
            f"{run.path}: the run is still running (controller pid {manifest.controller.get('pid')}); "
            "resume it only once it has stopped"
        )
    if manifest.order_seed is None or manifest.stopping.target_half_width is None:
        raise HarnessError(
            f"{run.path}: its manifest lacks the trial order seed or the stopping rule "
            "(written by an older harness?); it cannot be resumed"
        )
    experiment_path = Path(experiment.path or experiment.file)
    spec, digest = spec_module.load_with_digest(experiment_path)
    if digest != experiment.sha256:
        raise HarnessError(
            f"{experiment_path}: changed since run {run.run_id} started (sha256 differs); "
            "resuming would mix two experiments: start a new run"
        )
    try:
        cpus = CpuSet.parse(manifest.hosts.cpu_restriction) if manifest.hosts.cpu_restriction is not None else None
    except CpuListError as exc:
        raise HarnessError(f"{run.path}: its manifest's hosts.cpu_restriction {exc}") from None
    stopping = manifest.stopping
    retries = (
        Retries(stopping.retries_per_variant, stopping.retries_total)
        if stopping.retries_per_variant is not None
        else None
    )
    plan = make_plan(spec, experiment.quick, manifest.order_seed, stopping.target_half_width, cpus, retries)
    trials = run.read_trials()
    gathered = Gathered(started=manifest.started or now(), trials=trials, resumed_trials=len(trials), clock=clock)
    gathered.recovered = list(manifest.recovered)
    inventory = load_inventory(inventory_path)
    context = RunContext(
        spec,
        digest,
        experiment_path,
        inventory,
        inventory.hosts_for(spec.roles),
        plan,
        run,
        RunOptions(wait_seconds, fake_steal),
    )
    return _run(context, gathered, progress, signals)


def _run(context: RunContext, gathered: Gathered, progress: Progress | None, signals: StopSignals | None) -> RunOutcome:
    progress = progress or (lambda event, info: None)
    signals = signals or NoSignals()

    def checkpoint() -> None:
        write_running(context, gathered)

    try:
        checkpoint()
        _measure(context, gathered, progress, signals, checkpoint)
    except HarnessError as exc:
        gathered.error = exc
    except KeyboardInterrupt:  # a signal that came before our handler was installed
        gathered.error = Interrupted("interrupted: the run stopped; hosts were restored")
    with signals.deferred():
        gathered.clock.enter("report")
        progress("stage", {"text": "analysing and writing the report"})
        outcome = write_results(context, gathered)
    if gathered.error is not None:
        raise RunFailed(gathered.error, context.run.path)
    return outcome


def _measure(
    context: RunContext, gathered: Gathered, progress: Progress, signals: StopSignals, checkpoint: Callable[[], None]
) -> None:
    spec, plan, run, hosts_by_role = context.spec, context.plan, context.run, context.hosts_by_role
    inventory = context.inventory
    hosts = unique_hosts(hosts_by_role)
    gathered.clock.enter("hosts")
    with ExitStack() as stack:
        sessions = {host.name: stack.enter_context(HostSession(host)) for host in hosts}
        progress("stage", {"text": f"checking {', '.join(sessions)}"})
        preflight.check_reachable(sessions)
        # The run's hosts are its own from here to the end: a second controller sees the lock.
        lock = HostLock(run.run_id, sessions, {host.name: host for host in hosts})
        stack.callback(lock.release)
        lock.acquire(context.options.wait_seconds, waiting=lambda text: progress("stage", {"text": f"waiting: {text}"}))
        stale = [journal for journals in lock.stale.values() for journal in journals]
        if stale:
            for done in recover(inventory.path.resolve(), stale, run.ansible, signals.cancel_requested):
                progress("stage", {"text": f"recovered {done.line()}"})
                gathered.recovered.append(done.to_json())
                if done.error:
                    raise HarnessError(
                        f"{done.journal.host}: the host still holds changes of {done.journal.describe()} that "
                        f"could not be restored ({done.error}); run `harness restore --inventory "
                        f"{inventory.path}` once it is reachable"
                    )
            checkpoint()
        gathered.topology = preflight.topology(sessions, run)
        gathered.not_applicable = preflight.unmet_requirements(spec, gathered.topology)
        if gathered.not_applicable:
            gathered.stop_reason = "no trials ran: the hosts cannot test this claim"
            return
        gathered.links = preflight.describe_links(spec, hosts_by_role, sessions)
        preflight.check_ports_free(spec, hosts_by_role, sessions)
        provisioner = Provisioner(
            inventory.path.resolve(), [h.name for h in hosts], run.ansible, signals.cancel_requested
        )
        gathered.clock.enter("snapshot")
        progress("stage", {"text": "recording host settings (ansible: snapshot)"})
        with signals.deferred():
            gathered.state = provisioner.snapshot(
                list(spec.provision.sysctls), {host.name: host.service_address for host in hosts}
            )
            # Before anything changes: what restore needs, on each host itself.
            workdir = Provisioner.workdir_for(run.run_id)
            lock.write(
                {host.name: new_journal(run.run_id, workdir, gathered.state, host.name, now()) for host in hosts}
            )
        checkpoint()
        signals.check()
        restore_error = None
        run_error = None
        try:
            gathered.clock.enter("provision")
            progress("stage", {"text": "provisioning: packages, builds, data, sysctls (ansible)"})
            with signals.deferred():
                workspace, gathered.tools = provisioner.apply(
                    spec,
                    spec_module.workload_dir(spec, context.experiment_path),
                    hosts_by_role,
                    plan.profile.parameters,
                    run.run_id,
                )
            signals.check()
            checkpoint()
            preflight.check_cpus(plan.profile.cpus, gathered.state)
            setting = TrialSetting(
                spec=spec,
                hosts_by_role=hosts_by_role,
                sessions=sessions,
                workspace=workspace,
                parameters=plan.profile.parameters,
                workload_dir=spec_module.workload_dir(spec, context.experiment_path),
                raw_dir=run.raw,
                proxy_delay_ms=preflight.proxy_delay(spec, gathered.links),
                cpu_restriction=plan.profile.cpus,
                fake_steal=context.options.fake_steal,
            )
            gathered.clock.enter("trials")
            progress("trials", {"total": plan.most_trials, "done": len(gathered.trials)})

            def record(trial: store.Trial) -> None:
                gathered.trials.append(trial)
                run.write_trials(gathered.trials)
                checkpoint()

            _run_rounds(spec, plan, setting, gathered, progress, signals, record)
        except BaseException as exc:  # restore first, whatever stopped the run
            run_error = exc
        gathered.clock.enter("restore")
        progress("stage", {"text": "restoring host settings (ansible: restore)"})
        with signals.deferred():
            try:
                provisioner.restore(gathered.state, Provisioner.workdir_for(run.run_id), run.run_id)
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


def _run_rounds(
    spec,
    plan: Plan,
    setting: TrialSetting,
    gathered: Gathered,
    progress: Progress,
    signals: StopSignals,
    record: Callable,
) -> None:
    """Run rounds of trials until the stopping rule is met; record why it stopped.
    Trials already measured (a resumed run) are skipped; the seed gives the same rounds.
    After each round, trials that failed a validity gate are run again (_replace_invalid)."""
    stopping = plan.profile.stopping
    of = f"of {plan.most_trials}" if stopping.minimum == stopping.maximum else f"of up to {plan.most_trials}"
    done = {trial.order for trial in gathered.trials}
    started = time.monotonic()
    while True:
        this_round = plan.round(gathered.rounds)
        for trial in this_round:
            if trial.index in done:
                continue
            _one_trial(spec, trial, setting, signals, progress, record, of)
        _replace_invalid(spec, plan, this_round, setting, gathered, signals, progress, record, of)
        gathered.rounds += 1
        if gathered.rounds < stopping.minimum:
            continue
        widths = _half_widths(spec, plan, gathered.trials)
        if all(width is not None and width <= stopping.target for width in widths.values()):
            gathered.stop_reason = (
                f"every pair's {analyse.Thresholds().confidence:.0%} interval"
                f"{' in every condition' if len(plan.conditions) > 1 else ''} is within "
                f"±{stopping.target:.1%} of its ratio"
            )
            return
        if gathered.rounds >= stopping.maximum:
            gathered.stop_reason = (
                f"the maximum of {stopping.maximum} repetitions was reached before the intervals "
                f"narrowed to ±{stopping.target:.1%}"
            )
            return
        elapsed = time.monotonic() - started
        if stopping.budget_s is not None and elapsed * (gathered.rounds + 1) / gathered.rounds > stopping.budget_s:
            gathered.stop_reason = (
                f"another round would exceed the time budget of {stopping.budget_s:g} s "
                f"before the intervals narrowed to ±{stopping.target:.1%}"
            )
            return
        signals.check()


def _one_trial(spec, trial, setting, signals, progress, record, of: str, replacing: int | None = None) -> store.Trial:
    signals.check()
    info = {"index": trial.index, "variant": trial.variant, "condition": trial.condition.label}
    if replacing is not None:
        info["replaces"] = replacing
    progress("trial_start", info)
    try:
        output = run_trial(trial, setting, signals)
    except Interrupted:
        raise
    except HarnessError as exc:
        shown = f"trial {trial.index + 1} {of}" if replacing is None else f"trial {trial.index + 1} (a replacement)"
        raise type(exc)(f"{shown} ({trial.variant}): {exc}") from None
    measured = collect.measure(output, spec.variants[trial.variant].load.parser, spec.warmup_values)
    record(measured)
    failed = [row["gate"] for row in gates.gates_for(spec, measured) if not row["passed"]]
    progress("trial", {**info, "seconds": sum(measured.values) / len(measured.values), "failed_gates": failed})
    return measured


def _replace_invalid(spec, plan: Plan, this_round, setting, gathered: Gathered, signals, progress, record, of) -> None:
    """Run again, in the round's order, every trial of this round whose variant and condition
    has no trial that passed every gate, while the retry budget lasts (per variant and
    condition: plan.retries_per_variant; in the run: plan.retries_total). The failed trials
    stay in the trial and gate tables; the statistics use the valid ones only. Replacements
    are numbered after every planned trial, so a resumed run finds them by their order."""
    while True:  # one pass per loop: each slot still lacking a valid trial, in the round's order
        valid = _valid_slots(spec, gathered.trials)
        ran_orders = {m.order for m in gathered.trials}
        lacking = [
            trial
            for trial in this_round
            # A planned trial that never ran (the run stopped first) has nothing to replace.
            if trial.index in ran_orders and (trial.variant, trial.condition.label, trial.repetition) not in valid
        ]
        ran = False
        for trial in lacking:
            extra = [m for m in gathered.trials if m.order >= plan.most_trials]
            used = sum(m.variant == trial.variant and m.condition == trial.condition.label for m in extra)
            if used >= plan.retries_per_variant or len(extra) >= plan.retries_total:
                continue
            index = max(plan.most_trials - 1, *(m.order for m in gathered.trials)) + 1
            _one_trial(spec, plan.replacement(trial, index), setting, signals, progress, record, of, trial.index)
            ran = True
        if not ran:
            return


def _valid_slots(spec, trials: list[store.Trial]) -> set[tuple[str, str, int]]:
    """(variant, condition, repetition) of every trial that passed all its gates."""
    return {
        (m.variant, m.condition, m.repetition) for m in trials if all(row["passed"] for row in gates.gates_for(spec, m))
    }


def valid_trials(spec, trials: list[store.Trial]) -> list[store.Trial]:
    """The trials that passed every gate: the only ones the statistics see."""
    return [m for m in trials if all(row["passed"] for row in gates.gates_for(spec, m))]


def _half_widths(spec, plan: Plan, trials: list[store.Trial]) -> dict[tuple[str, str], float | None]:
    values = collect.values_frame(valid_trials(spec, trials))
    widths = {}
    for condition in plan.conditions:
        own = values[values["condition"] == condition.label]
        for pair in spec.pairs:
            verdict = judge_pair(spec, own, pair)
            widths[(pair.name, condition.label)] = verdict.half_width
    return widths
