"""Experiment spec -> the trials to run, round by round.

A trial is one repetition of one variant: start its server, run its load
generator once, stop the server. A round runs every variant once, in an order
shuffled with a recorded seed, so that drift on the host and order effects
(caches, a variant always following another) fall on all variants alike.
Rounds repeat until the stopping rule says enough (see spec.Stopping).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from harness.spec import ExperimentSpec, Stopping, parameters_for, stopping_for


@dataclass(frozen=True)
class Trial:
    index: int  # position in the run, from 0
    variant: str
    repetition: int  # from 0: the round it belongs to


@dataclass(frozen=True)
class Plan:
    variants: tuple[str, ...]
    stopping: Stopping
    parameters: dict
    quick: bool
    seed: int

    @property
    def repetitions(self) -> int:
        """The rounds that always run."""
        return self.stopping.minimum

    def round(self, repetition: int) -> tuple[Trial, ...]:
        """Round `repetition`: every variant once, in this round's seeded order."""
        order = list(self.variants)
        random.Random(f"{self.seed}:{repetition}").shuffle(order)
        first = repetition * len(self.variants)
        return tuple(Trial(first + i, variant, repetition) for i, variant in enumerate(order))

    @property
    def trials(self) -> tuple[Trial, ...]:
        """The trials of the rounds that always run."""
        return tuple(trial for repetition in range(self.repetitions) for trial in self.round(repetition))

    @property
    def most_trials(self) -> int:
        return self.stopping.maximum * len(self.variants)


def make_plan(spec: ExperimentSpec, quick: bool, seed: int, target: float | None = None) -> Plan:
    variants = tuple(dict.fromkeys(name for pair in spec.pairs for name in (pair.baseline, pair.treatment)))
    return Plan(variants=variants, stopping=stopping_for(spec, quick, target), parameters=parameters_for(spec, quick),
                quick=quick, seed=seed)
