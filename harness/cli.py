"""The command line: arguments in, one line per error out. With cli_lab.py (`harness lab`)
and cli_progress.py (the progress display), the only modules that print or exit.

Exit status: 0 the command completed (whatever the verdicts); 1 a user error
(bad file, missing host, busy port, failed trial), printed as one `error:` line;
2 bad usage; 130 interrupted by Ctrl-C or SIGTERM (hosts restored, results kept).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console

from harness import resources
from harness.cli_lab import lab_group
from harness.cli_progress import ProgressDisplay
from harness.cpuset import CpuListError, CpuSet
from harness.errors import HarnessError, Interrupted
from harness.run import spec as spec_module
from harness.run.interrupt import StopSignals
from harness.run.profile import Retries
from harness.run.spec_source import shown_path


def _fail(error: HarnessError, status: int = 1) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(status)


class _ParsedOption(click.ParamType):
    """An option's text parsed once into the harness's own value (CpuSet, Retries); the
    parser's message becomes click's usage error, which names the option. `name` is the
    metavar --help shows."""

    def __init__(self, name: str, parse, errors: type[Exception]):
        self.name, self.parse, self.errors = name, parse, errors

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except self.errors as error:
            self.fail(str(error), param, ctx)


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
    type=_ParsedOption("LIST", CpuSet.parse, CpuListError),
    help="Run servers and load generators on these CPUs only (e.g. 0 or 0-1), as if the host had no "
    "others; recorded in the manifest as part of the host's fingerprint.",
)
@click.option(
    "--retries",
    type=_ParsedOption("N[,TOTAL]", Retries.parse, ValueError),
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
    display = ProgressDisplay(console)
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


main.add_command(lab_group)
