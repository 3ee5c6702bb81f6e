"""Where a run's wall time goes: a clock that charges each second to the stage the run is
in, and the record the manifest keeps of it (`timing`), with the trials' stage split into
load windows, each trial's set-up and tear-down, and the work between trials (gates,
writing the trial records and the manifest).

Stages, in order: start-up (experiment, plan, run directory), hosts (connect, check, lock,
recover, topology, links, ports), snapshot, provision, trials, restore, report (analysis,
charts, files). A resumed run adds its own seconds to those its first part recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from harness.results.store import Trial

STAGES = ("start-up", "hosts", "snapshot", "provision", "trials", "restore", "report")


class StageClock:
    """Wall time per stage, from a monotonic clock. `enter(stage)` ends the stage the run was
    in and starts `stage`; a stage entered twice adds up."""

    def __init__(self, earlier: Mapping | None = None):
        earlier = earlier or {}
        self.seconds: dict[str, float] = {name: float(value) for name, value in earlier.get("stages", {}).items()}
        self._earlier_wall = float(earlier.get("wall_seconds", 0.0))
        self._started = time.monotonic()
        self._stage: str | None = None
        self._since = self._started

    def enter(self, stage: str) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        now = time.monotonic()
        self._charge(now)
        self._stage, self._since = stage, now

    def _charge(self, now: float) -> None:
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
        self._since = now

    def record(self, trials: Iterable[Trial]) -> dict:
        """The manifest's `timing`, as it stands now (the current stage counted up to now)."""
        now = time.monotonic()
        self._charge(now)
        wall = self._earlier_wall + now - self._started
        trials = list(trials)
        windows = sum(trial.wall_seconds for trial in trials)
        set_up = sum(trial.setup_seconds or 0.0 for trial in trials)
        tear_down = sum(trial.teardown_seconds or 0.0 for trial in trials)
        in_trials = self.seconds.get("trials", 0.0)
        return {
            "wall_seconds": round(wall, 3),
            "stages": {name: round(self.seconds[name], 3) for name in STAGES if name in self.seconds},
            "trials": {
                "load_windows": round(windows, 3),
                "set_up": round(set_up, 3),
                "tear_down": round(tear_down, 3),
                # gates, trial record and manifest writes, progress; never negative from rounding
                "between": round(max(0.0, in_trials - windows - set_up - tear_down), 3),
            },
            "load_window_share": round(windows / wall, 4) if wall > 0 else None,
        }
