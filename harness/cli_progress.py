"""The run's progress on the command line: a live bar on a terminal, plain lines elsewhere.
Part of the command line (cli.py uses it); nothing else prints."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressDisplay:
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
