"""Ratios and intervals -> a verdict per pair and condition, and one for the claim: the policy.

Pure functions over `harness.results.analyse`'s numbers. Where the rules live: `decide`
(one pair, its rules in order), `claim_verdict` (every pair and condition together),
`thresholds_for` (k and the no-difference margin a run uses), `invalid_reason` (a failed
validity gate makes a pair's runs untrustworthy) and `cross_check` (pyperf's opinion).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from harness.results.analyse import (
    Thresholds,
    check_positive,
    log_ratio,
    noise_margin,
    pyperf_significant,
    ratio_interval,
    relative_half_width,
    run_means,
    runs_needed,
    runs_per_variant,
)
from harness.results.store import GATES

# One pair under one condition. The order is the rules' order of strength, used to name them.
VERDICTS = (
    "reproduced",
    "larger effect",
    "smaller effect",
    "no effect",
    "reversed",
    "inconclusive",
    "not applicable",
)
# The claim over every pair and condition has one more word.
SOME_CONDITIONS = "reproduced under some conditions"
CLAIM_VERDICTS = (VERDICTS[0], SOME_CONDITIONS, *VERDICTS[1:])
# How the claim's word is chosen, stated in the report and the README.
CLAIM_RULE = (
    "not applicable when every pair and condition is; reproduced when every tested one is reproduced "
    "or larger effect and at least one is reproduced; larger effect when every tested one is larger effect; "
    "reproduced under some conditions (naming them) when some but not all are reproduced or larger effect; "
    "inconclusive when none is and any is inconclusive; otherwise the most favourable of the decided "
    "words: smaller effect, then no effect, then reversed"
)


@dataclass(frozen=True)
class PairVerdict:
    pair: str
    baseline: str
    treatment: str
    claimed_ratio: float
    measured_ratio: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    n_baseline: int  # runs, not values
    n_treatment: int
    verdict: str
    rule: str
    reason: str
    fraction_of_claim: float | None
    # (ci_high / ci_low) ** 0.5 - 1: the interval's half-width as a ratio; None without an interval.
    half_width: float | None = None
    # Runs per variant a straddling interval would need to decide; None for every other rule.
    runs_needed: int | None = None
    condition: str = ""  # the swept values it was measured under, "" when nothing is swept

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")

    @property
    def label(self) -> str:
        """The pair, and its condition when there is one: "nginx · connections=64"."""
        return f"{self.pair} · {self.condition}" if self.condition else self.pair

    def as_dict(self) -> dict:
        """Plain Python types only, NaN as None, so json.dumps accepts it."""
        return {key: _plain(value) for key, value in asdict(self).items()}


def _plain(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def compare_pair(
    values: pd.DataFrame,
    *,
    pair: str,
    baseline: str,
    treatment: str,
    claimed_ratio: float,
    better: str,
    thresholds: Thresholds = Thresholds(),
    not_applicable: str | None = None,
    invalid: str | None = None,
    condition: str = "",
) -> PairVerdict:
    """Measure treatment against baseline and decide whether the claimed ratio holds.

    `not_applicable` and `invalid` are reasons the caller found: the host cannot test the
    claim, or a validity gate failed in the pair's runs. An invalid pair still gets its
    ratio and interval, so the report shows what was measured, but its verdict is
    inconclusive.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    baseline_means = run_means(values, baseline)
    treatment_means = run_means(values, treatment)
    for name, means in ((baseline, baseline_means), (treatment, treatment_means)):
        check_positive(name, means)

    measured = ci_low = ci_high = None
    if not_applicable is None and len(baseline_means) and len(treatment_means):
        measured = float(np.exp(log_ratio(baseline_means, treatment_means, better)))
        if len(baseline_means) >= 2 and len(treatment_means) >= 2:
            ci_low, ci_high = ratio_interval(baseline_means, treatment_means, better, thresholds)

    n_baseline, n_treatment = len(baseline_means), len(treatment_means)
    verdict, rule, reason, fraction = decide(
        claimed_ratio, measured, ci_low, ci_high, n_baseline, n_treatment, thresholds, not_applicable, invalid=invalid
    )
    needed = None
    if rule == STRADDLE_RULE:
        needed = runs_needed(
            runs_per_variant(n_baseline, n_treatment), ci_low, ci_high, measured, claimed_ratio, thresholds.k
        )
    return PairVerdict(
        pair=pair,
        baseline=baseline,
        treatment=treatment,
        claimed_ratio=float(claimed_ratio),
        measured_ratio=measured,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=float(thresholds.confidence),
        n_baseline=n_baseline,
        n_treatment=n_treatment,
        verdict=verdict,
        rule=rule,
        reason=reason,
        fraction_of_claim=fraction,
        half_width=relative_half_width(ci_low, ci_high) if _finite(ci_low, ci_high) else None,
        runs_needed=needed,
        condition=condition,
    )


@dataclass(frozen=True)
class ClaimVerdict:
    """One verdict for the claim over every pair and condition, and why."""

    verdict: str
    reason: str
    counts: dict  # verdict -> how many pair/condition verdicts had it
    best: PairVerdict | None  # the largest measured ratio among the tested ones

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "counts": dict(self.counts),
            "best": self.best.as_dict() if self.best else None,
        }


def claim_verdict(verdicts: list[PairVerdict]) -> ClaimVerdict:
    """Summarise the per-condition verdicts by CLAIM_RULE, in order:

    not applicable when every one is; reproduced when every tested one is reproduced or
    larger effect (and at least one reproduced); larger effect when every tested one is;
    reproduced under some conditions, naming them, when some are; inconclusive when none
    is and any is inconclusive (it might still hold there); otherwise the most favourable
    decided word: smaller effect, then no effect, then reversed.
    """
    counts = {name: sum(v.verdict == name for v in verdicts) for name in VERDICTS}
    counts = {name: count for name, count in counts.items() if count}
    tested = [v for v in verdicts if v.verdict != "not applicable"]
    measured = [v for v in tested if v.measured_ratio is not None]
    best = max(measured, key=lambda v: v.measured_ratio) if measured else None
    tally = ", ".join(f"{count} {name}" for name, count in counts.items())
    if not verdicts:
        return ClaimVerdict("inconclusive", "Nothing was measured.", counts, None)
    if not tested:
        return ClaimVerdict("not applicable", verdicts[0].reason, counts, None)
    best_text = f" The largest measured gain is {_x(best.measured_ratio)} ({best.label})." if best else ""
    claimed = _x(tested[0].claimed_ratio)
    holding = [v for v in tested if v.verdict in ("reproduced", "larger effect")]
    if len(holding) == len(tested) and counts.get("reproduced", 0):
        larger = counts.get("larger effect", 0)
        verdict = "reproduced"
        how = f"The claim of {claimed} holds in every tested condition" + (
            f" ({larger} of them measured wholly above the claim times k)" if larger else ""
        )
    elif len(holding) == len(tested):
        verdict, how = "larger effect", f"Every tested condition measured wholly above the claimed {claimed} times k"
    elif holding:
        names = ", ".join(v.label for v in holding)
        verdict, how = SOME_CONDITIONS, f"The claim of {claimed} holds only under some conditions: {names}"
    elif counts.get("inconclusive", 0):
        verdict, how = "inconclusive", f"No condition reproduced the claim of {claimed}, but some could not be decided"
    else:
        verdict = next(name for name in ("smaller effect", "no effect", "reversed") if counts.get(name))
        how = {
            "smaller effect": f"No tested condition reaches the claimed {claimed}; the largest real gain is smaller",
            "no effect": f"No tested condition shows a gain beyond the no-difference margin, let alone {claimed}",
            "reversed": f"Every tested condition is slower with the treatment, against a claimed {claimed}",
        }[verdict]
    return ClaimVerdict(verdict, f"{how} ({tally} of {len(verdicts)}).{best_text}", counts, best)


MARGIN_CAP = 0.05  # a noisy host never makes a significant gain above 5% count as "no gain"


def thresholds_for(values: pd.DataFrame, baselines: list[str], k: float, margin: float | None) -> Thresholds:
    """k from the experiment; the no-difference margin from it too, or else from the
    noisiest baseline's own run-to-run spread (an A/A estimate on this host), capped
    at MARGIN_CAP: noise already widens the interval, it must not also widen "no gain"."""
    if margin is not None:
        return Thresholds(k=k, margin=margin, margin_source="experiment file")
    defaults = Thresholds(k=k)
    noise = {
        baseline: noise_margin(values, baseline, defaults)
        for baseline in dict.fromkeys(baselines)
        if values.loc[values["variant"] == baseline, "run"].nunique() >= 2
    }
    if not noise:
        return defaults
    noisiest = max(noise, key=noise.get)
    if noise[noisiest] > MARGIN_CAP:
        return Thresholds(
            k=k, margin=MARGIN_CAP, margin_source=f"cap; A/A noise of {noisiest} is {noise[noisiest]:.3f}"
        )
    return Thresholds(k=k, margin=noise[noisiest], margin_source=f"A/A noise of {noisiest}")


GATE_ADVICE = {
    "CPU steal": "run on a quieter host, raise analysis.gate_steal, or allow more retries (--retries)",
    "busy host": "stop what else runs on the trial's CPUs, raise analysis.gate_busy, or allow more retries (--retries)",
    "swap": "free memory on the host or allow more retries (--retries)",
    "throttling": "cool or unthrottle the host, or allow more retries (--retries)",
    "load errors": "fix what makes requests fail (server log), raise analysis.gate_errors, or allow more retries",
    "load generator CPU": "give the load generator more CPU, raise analysis.gate_load_cpu, or allow more retries",
}
# A trial's status in the gate table: failed a gate and was not replaced (budget out, or the run stopped).
EXCLUDED = "excluded"
# Failed a gate; a later trial of the same variant, condition and repetition replaced it.
REPLACED = "replaced"


def replaced_counts(gate_rows: list[dict], variants: tuple[str, ...], condition: str | None = "") -> dict[str, int]:
    """Gate -> how many trials of these variants under this condition (None: any) it made invalid
    (replaced or excluded); a trial that failed two gates counts under each."""
    counts: dict[str, int] = {}
    for row in gate_rows:
        if not row["passed"] and row["variant"] in variants and condition in (None, row["condition"]):
            counts[row["gate"]] = counts.get(row["gate"], 0) + 1
    return counts


def invalid_reason(gate_rows: list[dict], baseline: str, treatment: str, condition: str = "") -> str | None:
    """Why a pair cannot be decided: trials that failed a validity gate and could not be replaced
    (the retry budget ran out, or the run stopped first). Replaced trials do not count: the
    verdict uses the valid trials that replaced them. The reason names the gate that failed
    most, how often, its worst value against the limit, and what to change."""
    own = [row for row in gate_rows if row["variant"] in (baseline, treatment) and row["condition"] == condition]
    excluded = {(row["variant"], row["order"]) for row in own if row.get("status") == EXCLUDED}
    if not excluded:
        return None
    failed = [row for row in own if not row["passed"]]
    counts = replaced_counts(own, (baseline, treatment), condition)
    gate = max(counts, key=counts.get)
    trials = len({(row["variant"], row["order"]) for row in own})
    worst = max((row for row in failed if row["gate"] == gate), key=lambda row: row["value"])
    return (
        f"the {gate} gate failed in {counts[gate]} of {trials} trials of this pair (worst: {worst['detail']}; "
        f"limit {worst['limit']:g}) and {len(excluded)} could not be replaced within the retry budget: "
        f"{GATE_ADVICE.get(gate, 'allow more retries (--retries)')} ({GATES})"
    )


def cross_check(verdict: PairVerdict, line: str) -> str | None:
    """None when pyperf and our interval agree on whether there is a difference, else why they may not.

    "A difference" for us is an interval that excludes 1. Also None when either side has
    no answer: no interval, or a pyperf line that pyperf_significant cannot read.
    """
    significant = pyperf_significant(line)
    if significant is None or not _finite(verdict.ci_low, verdict.ci_high):
        return None
    ours = verdict.ci_low > 1 or verdict.ci_high < 1
    if ours == significant:
        return None
    interval = f"our {_percent(verdict.confidence)} interval {_x(verdict.ci_low)}-{_x(verdict.ci_high)}"
    runs = f"{verdict.n_baseline} and {verdict.n_treatment} runs"
    if significant:
        return (
            f"pyperf finds a significant difference but {interval} includes 1x. pyperf runs a t-test on every "
            "value as if each were independent; values of one run share a server process and host state, so "
            "when runs differ more than the values within them it sees more evidence than there is. Our "
            f"bootstrap resamples run means, so only the {runs} count."
        )
    return (
        f"{interval} excludes 1x but pyperf finds no significant difference. pyperf's t-test (always at 95%) "
        "pools every value, so scatter and outliers within runs weaken it; our bootstrap resamples run means "
        f"({runs}), in which that scatter averages out."
    )


RUN_INVALID_RULE = "retry budget exhausted"
STRADDLE_RULE = "ci_low < claimed/k <= ci_high"


def decide(
    claimed: float,
    measured: float | None,
    ci_low: float | None,
    ci_high: float | None,
    n_baseline: int,
    n_treatment: int,
    thresholds: Thresholds = Thresholds(),
    not_applicable: str | None = None,
    *,
    invalid: str | None = None,
) -> tuple[str, str, str, float | None]:
    """Apply the rules in order; return (verdict, rule, reason, fraction_of_claim).

    fraction_of_claim is (measured - 1) / (claimed - 1), given only for a smaller effect,
    where it says how much of the claimed gain was found. `invalid` is why
    the runs cannot be trusted (a failed validity gate); it makes the verdict inconclusive.
    """
    if not_applicable is not None:
        return "not applicable", "not applicable", not_applicable, None

    if invalid is not None:
        return "inconclusive", RUN_INVALID_RULE, invalid, None

    min_runs = thresholds.min_runs
    if n_baseline < min_runs or n_treatment < min_runs:
        return (
            "inconclusive",
            "runs < min_runs",
            f"Only {n_baseline} baseline and {n_treatment} treatment run(s) were measured; "
            f"a verdict needs at least {min_runs} runs of each.",
            None,
        )

    if not _finite(measured, ci_low, ci_high):
        return ("inconclusive", "no interval", "No ratio or interval could be computed from the measured values.", None)

    target = claimed / thresholds.k
    above = claimed * thresholds.k
    floor = 1 + thresholds.margin
    roof = 1 / floor  # the no-difference margin on the slower side
    interval = f"The {_percent(thresholds.confidence)} interval {_x(ci_low)}-{_x(ci_high)}"
    target_text = f"{_x(claimed)}/{thresholds.k:g} = {_x(target)}"
    margin_text = f"the no-difference margin {_x(roof)}-{_x(floor)}"

    if ci_low > above:
        return (
            "larger effect",
            "ci_low > claimed*k",
            f"{interval} lies wholly above {_x(claimed)}*{thresholds.k:g} = {_x(above)}: the treatment is better, "
            f"but by {measured / claimed:.3g} times the claimed ratio: the claim's size is wrong too.",
            None,
        )
    if ci_low >= target:
        return (
            "reproduced",
            "ci_low >= claimed/k",
            f"{interval} reaches {target_text}: the measured gain of {_x(measured)} is within tolerance of the claim.",
            None,
        )
    if ci_high < roof:
        return (
            "reversed",
            "ci_high < 1/(1 + margin)",
            f"{interval} lies below {margin_text}: the treatment is significantly worse than the baseline, "
            f"against a claimed {_x(claimed)}.",
            None,
        )
    if ci_high < target and ci_low <= floor:
        return (
            "no effect",
            "ci_high < claimed/k and ci_low <= 1 + margin",
            f"{interval} lies below {target_text} and reaches into {margin_text}: "
            "no difference beyond the margin was measured.",
            None,
        )
    if ci_low > floor and ci_high < target:
        fraction = (measured - 1) / (claimed - 1)
        return (
            "smaller effect",
            "ci_low > 1 + margin and ci_high < claimed/k",
            f"{interval} lies below {target_text} but above {_x(floor)}: "
            f"the treatment is better, by {fraction:.0%} of the claimed gain.",
            float(fraction),
        )
    needed = runs_needed(runs_per_variant(n_baseline, n_treatment), ci_low, ci_high, measured, claimed, thresholds.k)
    if needed is None:
        advice = "the measured ratio sits on claimed/k, so more runs may still not decide it."
    else:
        advice = f"about {needed} runs per variant would decide it."
    return (
        "inconclusive",
        STRADDLE_RULE,
        f"{interval} straddles {target_text}: the data cannot tell whether the claim holds; {advice}",
        None,
    )


def _finite(*numbers) -> bool:
    return all(number is not None and math.isfinite(number) for number in numbers)


def _x(ratio: float) -> str:
    return f"{ratio:.3g}x"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"
