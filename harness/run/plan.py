"""Experiment spec -> the trials to run, round by round.

A condition is one combination of the swept parameters' values (one condition
with no values when nothing is swept). A trial is one repetition of one variant
under one condition: start its server, run its load generator, stop the server.
A round runs every variant under every condition once, in an order shuffled with
a recorded seed, so that drift on the host and order effects (caches, a variant
always following another) fall on all variants and conditions alike. Rounds
repeat until the stopping rule says enough (see profile.Stopping). The plan carries the
resolved profile (profile.resolve_profile): parameters, sweep, stopping rule and CPUs.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from harness.cpuset import CpuSet
from harness.run.profile import Profile, Retries, resolve_profile
from harness.run.spec import ExperimentSpec


@dataclass(frozen=True)
class Condition:
    values: tuple[tuple[str, object], ...]  # (placeholder, value) for every swept placeholder
    # What names the condition: (placeholder, value) in the sweep's order; for a swept
    # mapping only its first entry (the others follow from it). None: all of `values`.
    shown: tuple[tuple[str, object], ...] | None = None

    @property
    def label(self) -> str:
        """ "connections=64, response_size=16384"; "" when nothing is swept."""
        return ", ".join(f"{key}={value}" for key, value in (self.values if self.shown is None else self.shown))

    def as_dict(self) -> dict:
        return dict(self.values)


NO_SWEEP = Condition(())


@dataclass(frozen=True)
class Trial:
    index: int  # position in the run, from 0
    variant: str
    repetition: int  # from 0: the round it belongs to
    condition: Condition = NO_SWEEP


@dataclass(frozen=True)
class Plan:
    variants: tuple[str, ...]
    profile: Profile
    seed: int
    conditions: tuple[Condition, ...] = field(default=(NO_SWEEP,))  # from profile.sweep

    @property
    def trials_per_round(self) -> int:
        return len(self.variants) * len(self.conditions)

    def round(self, repetition: int) -> tuple[Trial, ...]:
        """Round `repetition`: every variant under every condition once, in this round's seeded order."""
        order = [(condition, variant) for condition in self.conditions for variant in self.variants]
        random.Random(f"{self.seed}:{repetition}").shuffle(order)
        first = repetition * self.trials_per_round
        return tuple(Trial(first + i, variant, repetition, condition) for i, (condition, variant) in enumerate(order))

    @property
    def trials(self) -> tuple[Trial, ...]:
        """The trials of the rounds that always run."""
        return tuple(trial for repetition in range(self.profile.repetitions) for trial in self.round(repetition))

    @property
    def most_trials(self) -> int:
        return self.profile.stopping.maximum * self.trials_per_round

    @property
    def retries_per_variant(self) -> int:
        """Trials that failed a gate that may be run again, per variant and condition."""
        return self.profile.retries.per_variant

    @property
    def retries_total(self) -> int:
        """... and in the whole run: the profile's, else half the most trials, at least 8."""
        total = self.profile.retries.total
        return total if total is not None else max(8, self.most_trials // 2)

    def replacement(self, failed: Trial, index: int) -> Trial:
        """A trial that runs `failed` again: same variant, repetition and condition; `index` is
        its own position in the run, after every planned one (so raw files never collide)."""
        return Trial(index, failed.variant, failed.repetition, failed.condition)

    def parameters_for(self, trial: Trial) -> dict:
        """The values a trial's {placeholders} take: fixed parameters plus its condition's."""
        return {**self.profile.parameters, **trial.condition.as_dict()}


def conditions(sweep: dict[str, list]) -> tuple[Condition, ...]:
    """Every combination of the swept values, the first key varying slowest. A swept
    mapping sets all its placeholders together and is named by its first entry."""
    if not sweep:
        return (NO_SWEEP,)
    choices = [
        [tuple(value.items()) if isinstance(value, dict) else ((key, value),) for value in values]
        for key, values in sweep.items()
    ]
    found = []
    for combination in itertools.product(*choices):
        values = tuple(pair for entries in combination for pair in entries)
        shown = tuple(entries[0] for entries in combination)
        found.append(Condition(values, None if shown == values else shown))
    return tuple(found)


def make_plan(
    spec: ExperimentSpec,
    quick: bool,
    seed: int,
    target: float | None = None,
    cpus: CpuSet | None = None,
    retries: Retries | None = None,
) -> Plan:
    """The plan of a run with the full or quick profile; `target`, `cpus` and `retries` come
    from the command line (or, on resume, from the manifest of the run)."""
    variants = tuple(dict.fromkeys(name for pair in spec.pairs for name in (pair.baseline, pair.treatment)))
    profile = resolve_profile(spec, quick, target, cpus, retries)
    return Plan(variants=variants, profile=profile, seed=seed, conditions=conditions(profile.sweep))
