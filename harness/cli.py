"""The command line: arguments in, one line per error out. The only module
that prints or exits.

Exit status: 0 the command completed (whatever the verdicts); 1 a user error
(bad file, missing host, busy port, failed trial), printed as one `error:` line;
2 bad usage; 130 interrupted by Ctrl-C or SIGTERM (hosts restored, results kept).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import resources
from harness.cpuset import CpuListError, CpuSet
from harness.errors import HarnessError, Interrupted
from harness.run import spec as spec_module
from harness.run.interrupt import StopSignals
from harness.run.spec_source import shown_path


def _fail(error: HarnessError, status: int = 1) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(status)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="harness")
def main() -> None:
    """Check published network-performance claims on real hosts and give each a measured verdict."""


@main.command()
@click.argument("experiment", required=False)
@click.option(
    "--inventory",
    "inventory_path",
    default=lambda: str(resources.default_inventory()),
    show_default="./inventory.ini, else localhost",
    help="Ansible inventory mapping the experiment's roles to hosts.",
)
@click.option(
    "--out",
    "out_dir",
    default="reports",
    show_default=True,
    help="Directory that receives the run directory <claim>-<time>-<id>/.",
)
@click.option("--quick", is_flag=True, help="Use the experiment's quick profile (fewer repetitions, smaller sizes).")
@click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    help="Seed of the trial order (default: a random one, recorded in the run's manifest).",
)
@click.option(
    "--target-width",
    "target_width",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    metavar="FRACTION",
    help="Repeat until every pair's interval is within ±FRACTION of its ratio (default: the experiment's "
    "adaptive.target_half_width, 0.05).",
)
@click.option(
    "--cpus",
    metavar="LIST",
    callback=lambda ctx, param, value: _cpu_set(value),
    help="Run servers and load generators on these CPUs only (e.g. 0 or 0-1), as if the host had no "
    "others; recorded in the manifest as part of the host's fingerprint.",
)
@click.option(
    "--retries",
    metavar="N[,TOTAL]",
    callback=lambda ctx, param, value: _retries(value),
    help="Run a trial that failed a validity gate again, up to N times per variant and condition and TOTAL "
    "times in the run (default: the experiment's analysis.retries, 4 and half the run's most trials).",
)
@click.option(
    "--resume",
    "resume_dir",
    metavar="RUN_DIR",
    type=click.Path(file_okay=False),
    help="Finish the remaining trials of an interrupted or failed run, in RUN_DIR, with its experiment, "
    "profile, seed and CPUs (EXPERIMENT and those options are then not given).",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(0),
    default=0,
    metavar="SECONDS",
    help="A host that another run holds is waited for, up to SECONDS (default: stop at once, naming the run).",
)
def run(
    experiment: str | None,
    inventory_path: str,
    out_dir: str,
    quick: bool,
    seed: int | None,
    target_width: float | None,
    cpus: CpuSet | None,
    retries,
    resume_dir: str | None,
    wait_seconds: float,
) -> None:
    """Run EXPERIMENT (a YAML file) and write its report."""
    from harness.run.pipeline import RunFailed, resume_experiment, run_experiment  # heavy imports only when running

    if resume_dir and (experiment or quick or seed is not None or target_width or cpus or retries):
        raise click.UsageError(
            "--resume takes the experiment, --quick, --seed, --target-width, --cpus and --retries from "
            "the run it resumes; give only RUN_DIR (and --inventory)"
        )
    if not resume_dir and not experiment:
        raise click.UsageError("give an EXPERIMENT file, or --resume RUN_DIR")
    console = Console(stderr=True)
    display = _ProgressDisplay(console)
    try:
        with StopSignals() as signals, display:
            if resume_dir:
                outcome = resume_experiment(
                    resume_dir, inventory_path, progress=display.update, signals=signals, wait_seconds=wait_seconds
                )
            else:
                outcome = run_experiment(
                    experiment,
                    inventory_path,
                    out_dir,
                    quick=quick,
                    progress=display.update,
                    signals=signals,
                    seed=seed,
                    target_half_width=target_width,
                    cpus=cpus,
                    retries=retries,
                    wait_seconds=wait_seconds,
                )
    except RunFailed as failure:
        _fail(failure, 130 if isinstance(failure.cause, Interrupted) else 1)
    except HarnessError as error:
        _fail(error, 130 if isinstance(error, Interrupted) else 1)
    for verdict in outcome.verdicts:
        measured = f"{verdict.measured_ratio:.2f}x" if verdict.measured_ratio is not None else "n/a"
        interval = f" [{verdict.ci_low:.2f}, {verdict.ci_high:.2f}]" if verdict.ci_low is not None else ""
        condition = f" [{verdict.condition}]" if verdict.condition else ""
        click.echo(
            f"{verdict.pair}{condition} ({verdict.baseline} -> {verdict.treatment}): {verdict.verdict} "
            f"(claimed {verdict.claimed_ratio:g}x, measured {measured}{interval})"
        )
    if outcome.claim_verdict is not None:
        click.echo(f"claim: {outcome.claim_verdict.verdict}: {outcome.claim_verdict.reason}")
    if outcome.invalid_by_gate:
        from harness.results.store import GATES as GATES_FILE

        gates = ", ".join(f"{gate} {count}" for gate, count in outcome.invalid_by_gate.items())
        click.echo(
            f"trials that failed a validity gate ({gates}): {outcome.replaced_trials} replaced by a rerun, "
            f"excluded from the statistics ({GATES_FILE})"
        )
    click.echo(f"report: {outcome.run_dir / 'index.html'}")


def _retries(value: str | None):
    """--retries, parsed here once; the run gets a Retries."""
    if value is None:
        return None
    from harness.run.profile import Retries

    try:
        return Retries.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--retries") from None


def _cpu_set(value: str | None) -> CpuSet | None:
    """--cpus, parsed here once; the run gets the CpuSet."""
    try:
        return CpuSet.parse(value) if value is not None else None
    except CpuListError as error:
        raise click.BadParameter(str(error)) from None


@main.command()
@click.option(
    "--inventory",
    "inventory_path",
    default=lambda: str(resources.default_inventory()),
    show_default="./inventory.ini, else localhost",
    help="Ansible inventory of the hosts to put back.",
)
@click.option("--host", "host_name", metavar="NAME", help="Only this host of the inventory.")
def restore(inventory_path: str, host_name: str | None) -> None:
    """Put hosts back after a run that could not (its controller was killed, a host was
    unreachable): for each journal of a run that is not running, stop the processes it
    recorded, restore every setting it recorded, remove its work folder and the journal.
    One line per host; exit 0 when every host is as its snapshot found it."""
    import shutil
    import tempfile

    from harness.hosts.recovery import restore_hosts

    log_dir = Path(tempfile.mkdtemp(prefix="harness-restore-"))
    try:
        reports = restore_hosts(Path(inventory_path), host_name, log_dir)
    except HarnessError as error:
        shutil.rmtree(log_dir, ignore_errors=True)
        _fail(error)
    for report in reports:
        for line in report.lines:
            click.echo(line)
    if all(report.ok for report in reports):
        shutil.rmtree(log_dir, ignore_errors=True)
        return
    _fail(
        HarnessError(
            f"not every host is as found: {', '.join(r.host for r in reports if not r.ok)} (ansible logs: {log_dir})"
        )
    )


@main.command()
@click.argument("experiments", nargs=-1, required=True)
def validate(experiments: tuple[str, ...]) -> None:
    """Check experiment files against the schema; one line per file."""
    for path, spec in _each_loaded(experiments):
        click.echo(f"{path}: ok ({spec.claim.id}, {len(spec.variants)} variants, {len(spec.pairs)} pairs)")


@main.command()
@click.argument("run_dir")
def verify(run_dir: str) -> None:
    """Check a run directory's files against the sha256 in its manifest."""
    from harness.results.store import MANIFEST
    from harness.results.store import verify as verify_run

    try:
        count = verify_run(Path(run_dir))
    except HarnessError as error:
        _fail(error)
    click.echo(f"{run_dir}: ok ({count} files match {MANIFEST})")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR RUN_DIR...")
@click.option(
    "--out",
    "out_dir",
    metavar="DIR",
    help="Folder that receives index.html and compare.json (default: reports/compare-<UTC time>).",
)
@click.option(
    "--allow-different",
    is_flag=True,
    help="Compare runs of different experiment definitions (their file's sha256 differs) anyway.",
)
def compare(run_dirs: tuple[str, ...], out_dir: str | None, allow_different: bool) -> None:
    """Put runs side by side: ratios, intervals and verdicts per claim, pair and condition,
    flipped verdicts, significant differences, and what differs in their environments."""
    if len(run_dirs) < 2:
        raise click.UsageError("give at least two run directories")
    from harness.results import compare as compare_module  # heavy imports only when comparing
    from harness.results.store import load_run

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = Path(out_dir) if out_dir else Path("reports") / f"compare-{stamp}"
    try:
        runs = [load_run(path) for path in run_dirs]
        comparison = compare_module.compare_runs(runs, allow_different=allow_different)
        page = compare_module.write_comparison(comparison, target, resources.TEMPLATES)
    except HarnessError as error:
        _fail(error)
    for row in comparison.rows:
        cells = "  ".join(_compared_cell(position, cell) for position, cell in enumerate(row.cells))
        condition = f" [{row.condition}]" if row.condition else ""
        click.echo(f"{row.claim_id} {row.pair_name}{condition}: {cells}")
    differing = comparison.differing_environment
    click.echo(
        f"environment differs in {len(differing)} of {len(comparison.environment)} recorded items"
        + (
            f": {', '.join(row.name for row in differing[:6])}{', ...' if len(differing) > 6 else ''}"
            if differing
            else ""
        )
    )
    click.echo(f"compare: {page}")


def _compared_cell(position: int, cell) -> str:
    if cell is None:
        return f"run {position + 1}: absent"
    measured = f"{cell.measured_ratio:.2f}x" if cell.measured_ratio is not None else "n/a"
    text = f"run {position + 1}: {cell.verdict} {measured}"
    if cell.flipped:
        text += " (flipped)"
    if cell.difference is not None and cell.difference.significant is not None:
        text += " (significant difference)" if cell.difference.significant else " (no significant difference)"
    return text


@main.command()
@click.argument("reports_dir")
@click.option(
    "--out",
    "site_dir",
    required=True,
    metavar="SITE_DIR",
    help="Folder that receives the site; an earlier site there is replaced, anything else is refused.",
)
def publish(reports_dir: str, site_dir: str) -> None:
    """Build a static site of every run under REPORTS_DIR: an index, a page per claim, every report,
    compare pages and the raw JSON; relative links only, so it works from file:// and any web server."""
    from harness.results.publish import build_site

    try:
        site = build_site(reports_dir, site_dir, resources.TEMPLATES)
    except HarnessError as error:
        _fail(error)
    for _, reason in site.skipped:
        click.echo(f"skipped: {reason}", err=True)
    click.echo(f"{len(site.runs)} runs, {len(site.claims)} claims, {len(site.comparisons)} compare pages")
    click.echo(f"site: {site.path / 'index.html'}")


@main.command(name="list")
@click.option(
    "--dir",
    "directory",
    default=str(resources.CATALOG),
    show_default="experiments/",
    help="Folder of experiment files.",
)
def list_experiments(directory: str) -> None:
    """Print the catalog: every experiment file and the claim it tests."""
    files = sorted(Path(directory).rglob("*.yaml"))
    if not files:
        _fail(HarnessError(f"{directory}: no experiment files (*.yaml)"))
    for path, spec in _each_loaded(files):
        click.echo(f"{spec.claim.id:<26} {spec.claim.claimed_ratio:>5g}x  {shown_path(path)}  {spec.claim.statement}")


# --- harness lab: hosts in network namespaces on this machine ------------------------

LAB_BASE_DIR = "/var/tmp/harness-lab"
_lab_name = click.option(
    "--name",
    default="lab",
    show_default=True,
    help="Lab name (1-10 lowercase letters and digits); prefixes its namespaces and links.",
)
_lab_base_dir = click.option(
    "--base-dir",
    default=LAB_BASE_DIR,
    show_default=True,
    help="Folder that holds each lab's keys, inventory and state.",
)


@main.group(name="lab")
def lab_group() -> None:
    """Lab hosts on this machine: network namespaces on a bridge, each with its own sshd."""


_RATE_UNITS = {"kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}
_DELAY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_LINK_FLAGS = {
    "queues": "--queues",
    "mtu": "--mtu",
    "rate_mbit": "--rate",
    "loss_percent": "--loss",
    "delay_ms": "--delay",
}


def _with_unit(text: str, units: dict[str, float], example: str) -> float:
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", text.lower())
    if not found or found.group(2) not in units:
        raise click.BadParameter(f"{text!r}: give a number and one of {', '.join(units)} (e.g. {example})")
    return float(found.group(1)) * units[found.group(2)]


def _parse_rate(ctx, param, value: str | None) -> float | None:
    # tc reads "mbps" as megabytes per second: only bit units, so nobody is off by 8
    return None if value is None else _with_unit(value, _RATE_UNITS, "100mbit, 1gbit")


def _parse_delay(ctx, param, value: str | None) -> float | None:
    return None if value is None else _with_unit(value, _DELAY_UNITS, "5ms")


def _parse_loss(ctx, param, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip().removesuffix("%"))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a percentage such as 1 or 0.5%") from None


@lab_group.command(name="up")
@click.option("--hosts", default=3, show_default=True, type=click.IntRange(1, 50), help="Number of hosts.")
@_lab_name
@click.option(
    "--experiment",
    "experiment",
    metavar="FILE",
    help="Take the link properties from this experiment file's `link:`; flags given here win.",
)
@click.option(
    "--queues", type=click.IntRange(1, 64), help="Receive and transmit queues of each host's eth0 (default 2)."
)
@click.option("--mtu", type=click.IntRange(68, 65535), help="MTU of each host's eth0 (default 1500).")
@click.option(
    "--rate",
    callback=_parse_rate,
    metavar="RATE",
    help="Egress rate limit of each host's eth0 (TBF), e.g. 100mbit or 1gbit.",
)
@click.option(
    "--loss",
    callback=_parse_loss,
    metavar="PERCENT",
    help="Random loss of packets arriving at each host (nftables); SSH (tcp port 22) is exempt.",
)
@click.option(
    "--delay",
    callback=_parse_delay,
    metavar="TIME",
    help="Added delay, e.g. 5ms: netem on each eth0 where the kernel has it, else recorded for a "
    "delay proxy that an experiment starts (harness/hosts/delay_proxy.py).",
)
@_lab_base_dir
def lab_up_command(
    hosts: int,
    name: str,
    experiment: str | None,
    queues: int | None,
    mtu: int | None,
    rate: float | None,
    loss: float | None,
    delay: float | None,
    base_dir: str,
) -> None:
    """Create the lab (or keep it if healthy); print the inventory path last."""
    from harness.hosts import lab as lab_module

    try:
        wanted = spec_module.load(experiment).link.model_dump() if experiment else {"queues": 2}
    except HarnessError as error:
        _fail(error)
    try:
        given = {"queues": queues, "mtu": mtu, "rate_mbit": rate, "loss_percent": loss, "delay_ms": delay}
        wanted.update({key: value for key, value in given.items() if value is not None})
        link = lab_module.LinkProperties(**wanted)
    except lab_module.LinkPropertyError as error:
        raise click.BadParameter(error.problem, param_hint=f"'{_LINK_FLAGS[error.field]}'") from None
    try:
        created = lab_module.lab_up(name=name, hosts=hosts, base_dir=Path(base_dir), link=link)
    except HarnessError as error:
        _fail(error)
    click.echo(
        f"lab {created.name}: {len(created.hosts)} hosts on {created.subnet} "
        f"(bridge {created.bridge} {created.bridge_address}), {created.queues} queues per eth0"
    )
    click.echo(f"  link: {lab_module.describe_link(created.link, created.link_mechanisms)}")
    for host in created.hosts:
        click.echo(f"  {host.name:<14} {host.address:<15} [{host.group}]  sshd pid {host.sshd_pid}")
    click.echo(str(created.inventory))


@lab_group.command(name="status")
@_lab_name
@_lab_base_dir
def lab_status_command(name: str, base_dir: str) -> None:
    """Show the lab's hosts, links, queues and sshd processes; exit 1 unless it is healthy."""
    from harness.errors import LabError
    from harness.hosts import lab as lab_module

    try:
        status = lab_module.lab_status(name=name, base_dir=Path(base_dir))
    except HarnessError as error:
        _fail(error)
    if not status.exists:
        _fail(LabError(f"lab {name}: not up (nothing in {status.directory}): run `harness lab up --name {name}`"))
    health = "healthy" if status.healthy else f"broken ({len(status.problems)} problems)"
    click.echo(
        f"lab {name}: {health}, {len(status.hosts)} hosts on {status.subnet or 'unknown subnet'}, "
        f"bridge {status.bridge.name + ' ' + status.bridge.state if status.bridge else 'missing'}"
    )
    for host in status.hosts:
        links = "  ".join(
            f"{link.name}{'@' + link.namespace if link.namespace else ''} {link.state}"
            f"{f' rx {link.rx_queues} tx {link.tx_queues}' if link.rx_queues else ''}"
            for link in host.links
        )
        sshd = f"sshd {host.sshd_pid} {'running' if host.sshd_alive else 'not running'}"
        in_place = f"  {host.link.describe()}" if host.link else ""
        click.echo(f"  {host.name:<14} {host.address or '-':<15} {sshd}  {links}{in_place}")
    for problem in status.problems:
        click.echo(f"  problem: {problem}")
    if not status.healthy:
        _fail(
            LabError(
                f"lab {name}: broken: run `harness lab up --name {name}` to rebuild it "
                f"or `harness lab down --name {name}`"
            )
        )


@lab_group.command(name="down")
@_lab_name
@_lab_base_dir
def lab_down_command(name: str, base_dir: str) -> None:
    """Remove the lab: its sshd processes, namespaces, links and files."""
    from harness.hosts import lab as lab_module

    try:
        lab_module.lab_down(name=name, base_dir=Path(base_dir))
    except HarnessError as error:
        _fail(error)
    click.echo(f"lab {name}: down")


def _each_loaded(paths):
    """Yield (path, spec) for each file that loads; print one error line for each that
    does not, and exit 1 at the end if any failed."""
    failed = False
    for path in paths:
        try:
            spec = spec_module.load(path)
        except HarnessError as error:
            click.echo(f"error: {error}", err=True)
            failed = True
            continue
        yield path, spec
    sys.exit(1 if failed else 0)


class _ProgressDisplay:
    """Where the run is: the stage, trial i of N, the variant (and condition) and the time left.

    On a terminal a rich bar, redrawn only on events: no refresh thread runs while a
    measurement is in progress. Elsewhere (a pipe, a file, CI) plain lines: one per stage,
    `· TEXT`, and one per trial, `trial I: VARIANT [CONDITION] SECONDS s (I of N, about T left)`.
    The estimate is the mean time per trial so far times the trials still to run; N is the
    most trials the run may take, so an adaptive run that stops early ends sooner.
    """

    def __init__(self, console: Console, clock=time.monotonic):
        self.console = console
        self.clock = clock
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[left]}", markup=False),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            transient=False,
        )
        self.task = None
        self.total = 0
        self.done = 0  # trials done, those of a resumed run's earlier session included
        self.resumed = 0  # trials done before this session: not timed here
        self.started = None
        self.stage = ""

    def __enter__(self):
        if self.live:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.progress.refresh()
            self.progress.__exit__(*exc)

    def time_left(self) -> str:
        timed = self.done - self.resumed
        if timed <= 0 or self.started is None:
            return "time left unknown"
        seconds = (self.clock() - self.started) / timed * max(0, self.total - self.done)
        return f"about {_duration(seconds)} left"

    def update(self, event: str, info: dict) -> None:
        if event == "stage":
            self.stage = info["text"]
            self.console.print(f"· {self.stage}", highlight=False, markup=False, soft_wrap=True)
            if self.task is not None:
                self.progress.update(self.task, description=self.stage)
        elif event == "trials":
            self.total, self.started = info["total"], self.clock()
            self.done = self.resumed = info.get("done", 0)
            if self.live:
                self.task = self.progress.add_task("measuring", total=self.total, completed=self.done, left="")
        elif event == "trial_start" and "replaces" in info:
            self.total += 1  # a trial that failed a gate runs again: one more to do
            if self.task is not None:
                self.progress.update(
                    self.task,
                    total=self.total,
                    description=f"trial {info['index'] + 1}: {_variant(info)} again (trial "
                    f"{info['replaces'] + 1} failed a gate)",
                )
        elif event == "trial_start" and self.task is not None:
            self.progress.update(self.task, description=f"trial {info['index'] + 1} of {self.total}: {_variant(info)}")
        elif event == "trial":
            self.done += 1
            number = info["index"] + 1
            if self.task is not None:
                self.progress.update(
                    self.task,
                    completed=self.done,
                    left=self.time_left(),
                    description=f"trial {number} of {self.total} done: {_variant(info)} {info['seconds']:.4g} s",
                )
            else:
                self.console.print(
                    f"trial {number}: {_variant(info)} {info['seconds']:.4g} s "
                    f"({self.done} of {self.total}, {self.time_left()})",
                    highlight=False,
                    markup=False,
                )
            if info.get("failed_gates"):
                self.console.print(
                    f"trial {number} failed the {', '.join(info['failed_gates'])} gate: excluded from the "
                    "statistics; it runs again if the retry budget allows",
                    highlight=False,
                    markup=False,
                )
        if self.live:
            self.progress.refresh()


def _variant(info: dict) -> str:
    condition = info.get("condition")
    return f"{info['variant']} [{condition}]" if condition else info["variant"]


def _duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
