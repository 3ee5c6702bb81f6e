"""An experiment file -> what one run uses of it: the parameters, the sweep, the stopping
rule and the CPU restriction, for the full or the quick profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.cpuset import CpuSet

if TYPE_CHECKING:
    from harness.run.spec import ExperimentSpec, ParamValue


@dataclass(frozen=True)
class Stopping:
    """When a run stops repeating: after `minimum` rounds, as soon as every pair's
    interval half-width is within `target` (if set), at `maximum` rounds, or when
    the trials have used `budget_s` seconds."""

    minimum: int
    maximum: int
    target: float | None
    budget_s: float | None


@dataclass(frozen=True)
class Retries:
    """How many trials that failed a validity gate may be run again: per variant and
    condition, and in the whole run (None: half the run's most trials, at least 8)."""

    per_variant: int
    total: int | None = None

    @classmethod
    def parse(cls, text: str) -> Retries:
        """`--retries N` or `--retries N,TOTAL`; ValueError with what is wrong."""
        parts = [part.strip() for part in text.split(",")]
        if len(parts) > 2 or not all(part.isdigit() for part in parts):
            raise ValueError(f"{text!r} is not N or N,TOTAL (whole numbers of retries)")
        return cls(int(parts[0]), int(parts[1]) if len(parts) == 2 else None)

    def __str__(self) -> str:
        return f"{self.per_variant}" + (f",{self.total}" if self.total is not None else "")


@dataclass(frozen=True)
class Profile:
    """The experiment as one run uses it: the full or the quick profile, with the command
    line's overrides applied. Resolved once (resolve_profile); the plan carries it."""

    quick: bool
    parameters: dict[str, ParamValue]  # fixed placeholders: the experiment's, quick's on top
    sweep: dict[str, list]  # swept placeholders: quick's lists replace the full ones
    stopping: Stopping
    cpus: CpuSet | None = None  # `harness run --cpus`: the only CPUs servers and load generators may use
    retries: Retries = Retries(4)  # analysis.retries, or `harness run --retries`

    @property
    def repetitions(self) -> int:
        """The rounds that always run."""
        return self.stopping.minimum


def resolve_profile(
    spec: ExperimentSpec,
    quick: bool,
    target: float | None = None,
    cpus: CpuSet | None = None,
    retries: Retries | None = None,
) -> Profile:
    """The full or quick profile; `target` and `retries` (from the command line) override the
    experiment's adaptive target and analysis.retries. A full run repeats adaptively up to
    adaptive.max_repetitions; a quick run does its quick.repetitions only, unless
    quick.max_repetitions lets it go on."""
    adaptive = spec.adaptive
    parameters = dict(spec.parameters)
    sweep = {key: list(values) for key, values in spec.sweep.items()}
    if quick:
        parameters.update(spec.quick.parameters)
        sweep.update({key: list(values) for key, values in spec.quick.sweep.items()})
        minimum = spec.quick.repetitions or spec.repetitions
        maximum = spec.quick.max_repetitions or minimum
        budget = spec.quick.time_budget_s or adaptive.time_budget_s
    else:
        minimum, maximum, budget = spec.repetitions, adaptive.max_repetitions, adaptive.time_budget_s
    stopping = Stopping(
        minimum=minimum, maximum=max(minimum, maximum), target=target or adaptive.target_half_width, budget_s=budget
    )
    retries = retries or Retries(spec.analysis.retries.per_variant, spec.analysis.retries.total)
    return Profile(quick=quick, parameters=parameters, sweep=sweep, stopping=stopping, cpus=cpus, retries=retries)
