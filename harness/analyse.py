"""Measured values -> summaries, ratios with intervals, and a verdict per pair.

Pure functions: a DataFrame in, numbers and frozen objects out; no files, no
printing. The unit of analysis is the run: values within one run (several
transfers) share the same server process and host state, so they are averaged
first and only the run means are resampled.

A ratio is always oriented so that > 1 means the treatment is better, whatever
the metric's direction; the claimed ratio is compared on that scale.

This module is meant to be swapped for a more rigorous one later; its public
surface is Thresholds, PairVerdict, summarise, run_means, compare_pair, decide.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

VERDICTS = ("reproduced", "partially reproduced", "not reproduced", "inconclusive", "not applicable")

REQUIRED_COLUMNS = ("variant", "run", "value")


@dataclass(frozen=True)
class Thresholds:
    k: float = 1.25  # tolerance: a claim holds when the interval reaches claimed/k
    margin: float = 0.05  # gains below 1 + margin count as no gain
    confidence: float = 0.95
    resamples: int = 10000
    min_runs: int = 3
    seed: int = 0

    def __post_init__(self):
        if not self.k >= 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if not self.margin >= 0:
            raise ValueError(f"margin must be 0 or more, got {self.margin}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie between 0 and 1, got {self.confidence}")
        if self.resamples < 100:
            raise ValueError(f"resamples must be at least 100, got {self.resamples}")
        # An interval needs at least two run means per side.
        if self.min_runs < 2:
            raise ValueError(f"min_runs must be at least 2, got {self.min_runs}")


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

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")

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


# --- summaries ----------------------------------------------------------------


def summarise(values: pd.DataFrame) -> pd.DataFrame:
    """Per variant, in order of first appearance: n, runs, mean, median, stdev, min, max."""
    _check_columns(values)
    grouped = values.groupby("variant", sort=False)["value"]
    summary = pd.DataFrame(
        {
            "n": grouped.count().astype(int),
            "runs": values.groupby("variant", sort=False)["run"].nunique().astype(int),
            "mean": grouped.mean(),
            "median": grouped.median(),
            "stdev": grouped.std(ddof=1),  # NaN when n < 2
            "min": grouped.min(),
            "max": grouped.max(),
        }
    )
    summary.index.name = "variant"
    return summary


def run_means(values: pd.DataFrame, variant: str) -> np.ndarray:
    """Mean value of each run of `variant`, ordered by run number; empty if it has none."""
    _check_columns(values)
    rows = values[values["variant"] == variant]
    return rows.groupby("run", sort=True)["value"].mean().to_numpy(dtype=float)


def _check_columns(values: pd.DataFrame) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in values.columns]
    if missing:
        raise ValueError(f"values lack column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")


# --- one pair -------------------------------------------------------------------


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
) -> PairVerdict:
    """Measure treatment against baseline and decide whether the claimed ratio holds."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    baseline_means = run_means(values, baseline)
    treatment_means = run_means(values, treatment)
    for name, means in ((baseline, baseline_means), (treatment, treatment_means)):
        if np.any(~np.isfinite(means)) or np.any(means <= 0):
            raise ValueError(f"variant {name!r} has a run mean that is not a positive number: {means.tolist()}")

    measured = ci_low = ci_high = None
    if not_applicable is None and len(baseline_means) and len(treatment_means):
        measured = float(np.exp(_log_ratio(baseline_means, treatment_means, better)))
        if len(baseline_means) >= 2 and len(treatment_means) >= 2:
            ci_low, ci_high = ratio_interval(baseline_means, treatment_means, better, thresholds)

    verdict, rule, reason, fraction = decide(
        claimed_ratio,
        measured,
        ci_low,
        ci_high,
        len(baseline_means),
        len(treatment_means),
        thresholds,
        not_applicable,
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
        n_baseline=len(baseline_means),
        n_treatment=len(treatment_means),
        verdict=verdict,
        rule=rule,
        reason=reason,
        fraction_of_claim=fraction,
    )


def _log_ratio(baseline, treatment, better, axis=-1):
    """log of the ratio of means, > 0 when the treatment is better. Vectorised along `axis`."""
    log_gain = np.log(np.mean(baseline, axis=axis)) - np.log(np.mean(treatment, axis=axis))
    return log_gain if better == "lower" else -log_gain


# scipy 1.15 renamed random_state to rng; older releases only know random_state.
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def ratio_interval(
    baseline_means: np.ndarray, treatment_means: np.ndarray, better: str, thresholds: Thresholds
) -> tuple[float, float]:
    """Bootstrap interval of the oriented ratio of means, resampling each side's runs independently.

    The log makes the interval symmetric for gains and losses. BCa first; percentile when
    BCa cannot work (identical values make its acceleration undefined); the point estimate
    for both ends when even that fails.
    """

    def statistic(baseline, treatment, axis=-1):
        return _log_ratio(baseline, treatment, better, axis=axis)

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = stats.bootstrap(
                (baseline_means, treatment_means),
                statistic,
                n_resamples=thresholds.resamples,
                vectorized=True,
                paired=False,
                axis=-1,
                confidence_level=thresholds.confidence,
                method=method,
                **{_RNG_KEYWORD: np.random.default_rng(thresholds.seed)},
            )
        low, high = result.confidence_interval
        degenerate = any(issubclass(w.category, stats.DegenerateDataWarning) for w in caught)
        if np.isfinite(low) and np.isfinite(high) and not degenerate:
            return float(np.exp(low)), float(np.exp(high))
    point = float(np.exp(statistic(baseline_means, treatment_means)))
    return point, point


# --- the verdict ----------------------------------------------------------------


def decide(
    claimed: float,
    measured: float | None,
    ci_low: float | None,
    ci_high: float | None,
    n_baseline: int,
    n_treatment: int,
    thresholds: Thresholds = Thresholds(),
    not_applicable: str | None = None,
) -> tuple[str, str, str, float | None]:
    """Apply the rules in order; return (verdict, rule, reason, fraction_of_claim).

    fraction_of_claim is (measured - 1) / (claimed - 1), given only for a partial
    reproduction, where it says how much of the claimed gain was found.
    """
    if not_applicable is not None:
        return "not applicable", "not applicable", not_applicable, None

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
        return (
            "inconclusive",
            "no interval",
            "No ratio or interval could be computed from the measured values.",
            None,
        )

    target = claimed / thresholds.k
    floor = 1 + thresholds.margin
    interval = f"The {_percent(thresholds.confidence)} interval {_x(ci_low)}-{_x(ci_high)}"
    target_text = f"{_x(claimed)}/{thresholds.k:g} = {_x(target)}"

    if ci_low >= target:
        return (
            "reproduced",
            "ci_low >= claimed/k",
            f"{interval} reaches {target_text}: the measured gain of {_x(measured)} is within tolerance of the claim.",
            None,
        )
    if ci_high < 1:
        return (
            "not reproduced",
            "ci_high < 1",
            f"{interval} lies below 1x: the treatment is slower than the baseline, "
            f"so the claim of {_x(claimed)} is contradicted.",
            None,
        )
    if ci_high < target and ci_low <= floor:
        return (
            "not reproduced",
            "ci_high < claimed/k and ci_low <= 1 + margin",
            f"{interval} lies below {target_text} and does not clear {_x(floor)}: no real gain was measured.",
            None,
        )
    if ci_low > floor and ci_high < target:
        fraction = (measured - 1) / (claimed - 1)
        return (
            "partially reproduced",
            "ci_low > 1 + margin and ci_high < claimed/k",
            f"{interval} lies below {target_text} but above {_x(floor)}: "
            f"the treatment is better, by {fraction:.0%} of the claimed gain.",
            float(fraction),
        )
    return (
        "inconclusive",
        "ci_low < claimed/k <= ci_high",
        f"{interval} straddles {target_text}: the data cannot tell whether the claim holds; "
        "more runs would narrow the interval.",
        None,
    )


def _finite(*numbers) -> bool:
    return all(number is not None and math.isfinite(number) for number in numbers)


def _x(ratio: float) -> str:
    return f"{ratio:.3g}x"


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"
