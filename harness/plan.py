"""Experiment spec -> the ordered list of trials to run.

A trial is one repetition of one variant: start its server, run its load
generator once, stop the server. Variants of a pair alternate (A B A B ...)
so that drift on the host falls on both sides alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.spec import ExperimentSpec, parameters_for, repetitions_for


@dataclass(frozen=True)
class Trial:
    index: int  # position in the run, from 0
    variant: str
    repetition: int  # from 0


@dataclass(frozen=True)
class Plan:
    trials: tuple[Trial, ...]
    repetitions: int
    parameters: dict
    quick: bool

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(trial.variant for trial in self.trials))


def make_plan(spec: ExperimentSpec, quick: bool) -> Plan:
    repetitions = repetitions_for(spec, quick)
    variants = list(dict.fromkeys(name for pair in spec.pairs for name in (pair.baseline, pair.treatment)))
    order = [(repetition, variant) for repetition in range(repetitions) for variant in variants]
    trials = tuple(Trial(index, variant, repetition) for index, (repetition, variant) in enumerate(order))
    return Plan(trials=trials, repetitions=repetitions, parameters=parameters_for(spec, quick), quick=quick)
