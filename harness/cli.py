"""The command line: arguments in, one line per error out. The only module
that prints or exits.

Exit status: 0 the command completed (whatever the verdicts); 1 a user error
(bad file, missing host, busy port, failed trial), printed as one `error:` line;
2 bad usage; 130 interrupted by Ctrl-C or SIGTERM (hosts restored, results kept).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import spec as spec_module
from harness.errors import HarnessError, Interrupted
from harness.interrupt import StopSignals

PROJECT_ROOT = spec_module.PROJECT_ROOT
DEFAULT_INVENTORY = PROJECT_ROOT / "inventory.ini"
EXPERIMENTS = PROJECT_ROOT / "experiments"


def _fail(error: HarnessError, status: int = 1) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(status)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="harness")
def main() -> None:
    """Check published network-performance claims on real hosts and give each a measured verdict."""


@main.command()
@click.argument("experiment")
@click.option("--inventory", "inventory_path", default=str(DEFAULT_INVENTORY), show_default="inventory.ini",
              help="Ansible inventory mapping the experiment's roles to hosts.")
@click.option("--out", "out_dir", default="reports", show_default=True,
              help="Directory that receives the run directory <claim>-<time>-<id>/.")
@click.option("--quick", is_flag=True, help="Use the experiment's quick profile (fewer repetitions, smaller sizes).")
def run(experiment: str, inventory_path: str, out_dir: str, quick: bool) -> None:
    """Run EXPERIMENT (a YAML file) and write its report."""
    from harness.pipeline import RunFailed, run_experiment  # heavy imports only when running

    console = Console(stderr=True)
    display = _ProgressDisplay(console)
    try:
        with StopSignals() as signals, display:
            outcome = run_experiment(experiment, inventory_path, out_dir, quick=quick, progress=display.update,
                                     signals=signals)
    except RunFailed as failure:
        _fail(failure, 130 if isinstance(failure.cause, Interrupted) else 1)
    except HarnessError as error:
        _fail(error, 130 if isinstance(error, Interrupted) else 1)
    for verdict in outcome.verdicts:
        measured = f"{verdict.measured_ratio:.2f}x" if verdict.measured_ratio is not None else "n/a"
        interval = (f" [{verdict.ci_low:.2f}, {verdict.ci_high:.2f}]" if verdict.ci_low is not None else "")
        click.echo(f"{verdict.pair} ({verdict.baseline} -> {verdict.treatment}): {verdict.verdict} (claimed {verdict.claimed_ratio:g}x, measured {measured}{interval})")
    click.echo(f"report: {outcome.run_dir / 'index.html'}")


@main.command()
@click.argument("experiments", nargs=-1, required=True)
def validate(experiments: tuple[str, ...]) -> None:
    """Check experiment files against the schema; one line per file."""
    for path, spec in _each_loaded(experiments):
        click.echo(f"{path}: ok ({spec.claim.id}, {len(spec.variants)} variants, {len(spec.pairs)} pairs)")


@main.command(name="list")
@click.option("--dir", "directory", default=str(EXPERIMENTS), show_default="experiments/",
              help="Folder of experiment files.")
def list_experiments(directory: str) -> None:
    """Print the catalog: every experiment file and the claim it tests."""
    files = sorted(Path(directory).glob("*.yaml"))
    if not files:
        _fail(HarnessError(f"{directory}: no experiment files (*.yaml)"))
    for path, spec in _each_loaded(files):
        click.echo(f"{spec.claim.id:<12} {spec.claim.claimed_ratio:>6g}x  {_shown(path)}  {spec.claim.statement}")


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


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _ProgressDisplay:
    """Stages as lines, trials as a bar. Redrawn only on events: no refresh
    thread runs while a measurement is in progress."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, auto_refresh=False, transient=False,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.refresh()
        self.progress.__exit__(*exc)

    def update(self, event: str, info: dict) -> None:
        if event == "stage":
            self.console.print(f"· {info['text']}", highlight=False)
        elif event == "trials":
            self.task = self.progress.add_task("trials", total=info["total"])
        elif event == "trial" and self.task is not None:
            self.progress.update(self.task, advance=1,
                                 description=f"trials (last: {info['variant']} {info['seconds']:.3f} s)")
            if not self.console.is_terminal:
                self.console.print(f"  trial {info['index'] + 1}: {info['variant']} {info['seconds']:.4f} s",
                                   highlight=False)
        self.progress.refresh()
