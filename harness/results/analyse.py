"""Measured values -> summaries, ratios with intervals, and a verdict per pair.

Pure functions: a DataFrame in, numbers and frozen objects out; no files, no
printing. The unit of analysis is the run: values within one run (several
transfers) share the same server process and host state, so they are averaged
first and only the run means are resampled.

A ratio is always oriented so that > 1 means the treatment is better, whatever
the metric's direction; the claimed ratio is compared on that scale.

Besides the verdict it says how sure the verdict is: the interval's relative
half-width, the runs a straddling interval would need to decide, an A/A noise
estimate of one variant that can serve as the no-difference margin, and whether
pyperf's own comparison of the same runs agrees.

The values DataFrame has columns variant, run, value; an `order` column (the
trial's position in the run, from 0) may be present and is used only by charts.

Public surface: Thresholds, PairVerdict, summarise, run_means, compare_pair, decide,
ratio_interval, relative_half_width, runs_needed, noise_margin, pyperf_significant,
cross_check.
"""

from __future__ import annotations

import inspect
import math
import re
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
    # Where `margin` came from, for the report: "default", "experiment file", "A/A noise of VARIANT".
    margin_source: str = "default"

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
        if not self.margin_source.strip():
            raise ValueError("margin_source must say where the margin came from")


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


# --- summaries ----------------------------------------------------------------


def summarise(values: pd.DataFrame) -> pd.DataFrame:
    """Per variant, in order of first appearance: n, runs, mean, median, stdev, min, max, cv, run_cv.

    cv is stdev / mean of the single values; run_cv is the same of the per-run means, the
    spread the interval is computed from. Both are NaN when there are fewer than two.
    """
    _check_columns(values)
    grouped = values.groupby("variant", sort=False)["value"]
    per_run = values.groupby(["variant", "run"], sort=False)["value"].mean().groupby(level="variant", sort=False)
    mean = grouped.mean()
    stdev = grouped.std(ddof=1)  # NaN when n < 2
    summary = pd.DataFrame(
        {
            "n": grouped.count().astype(int),
            "runs": values.groupby("variant", sort=False)["run"].nunique().astype(int),
            "mean": mean,
            "median": grouped.median(),
            "stdev": stdev,
            "min": grouped.min(),
            "max": grouped.max(),
            "cv": stdev / mean,
            "run_cv": per_run.std(ddof=1) / per_run.mean(),
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
        _check_positive(name, means)

    measured = ci_low = ci_high = None
    if not_applicable is None and len(baseline_means) and len(treatment_means):
        measured = float(np.exp(_log_ratio(baseline_means, treatment_means, better)))
        if len(baseline_means) >= 2 and len(treatment_means) >= 2:
            ci_low, ci_high = ratio_interval(baseline_means, treatment_means, better, thresholds)

    n_baseline, n_treatment = len(baseline_means), len(treatment_means)
    verdict, rule, reason, fraction = decide(
        claimed_ratio,
        measured,
        ci_low,
        ci_high,
        n_baseline,
        n_treatment,
        thresholds,
        not_applicable,
        invalid=invalid,
    )
    needed = None
    if rule == STRADDLE_RULE:
        needed = runs_needed(
            _runs_per_variant(n_baseline, n_treatment), ci_low, ci_high, measured, claimed_ratio, thresholds.k
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


# --- the claim as a whole -------------------------------------------------------


@dataclass(frozen=True)
class ClaimVerdict:
    """One verdict for the claim over every pair and condition, and why."""

    verdict: str
    reason: str
    counts: dict  # verdict -> how many pair/condition verdicts had it
    best: PairVerdict | None  # the largest measured ratio among the tested ones

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "reason": self.reason, "counts": dict(self.counts),
                "best": self.best.as_dict() if self.best else None}


def claim_verdict(verdicts: list[PairVerdict]) -> ClaimVerdict:
    """Summarise the per-condition verdicts; rules in order:

    not applicable when every one is; reproduced when every tested one is; partially
    reproduced when at least one is reproduced or partially reproduced (the claim holds
    only somewhere, or only in part); inconclusive when any other is inconclusive (it
    might still hold there); not reproduced otherwise.
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
    best_text = (f" The largest measured gain is {_x(best.measured_ratio)} ({best.label})." if best else "")
    claimed = _x(tested[0].claimed_ratio)
    if counts.get("reproduced", 0) == len(tested):
        verdict, how = "reproduced", f"The claim of {claimed} holds in every tested condition"
    elif counts.get("reproduced", 0) or counts.get("partially reproduced", 0):
        verdict, how = "partially reproduced", f"The claim of {claimed} holds only in part or only under some conditions"
    elif counts.get("inconclusive", 0):
        verdict, how = "inconclusive", f"No condition reproduced the claim of {claimed}, but some could not be decided"
    else:
        verdict, how = "not reproduced", f"No tested condition shows the claimed {claimed}"
    return ClaimVerdict(verdict, f"{how} ({tally} of {len(verdicts)}).{best_text}", counts, best)


def _check_positive(variant: str, means: np.ndarray) -> None:
    if np.any(~np.isfinite(means)) or np.any(means <= 0):
        raise ValueError(f"variant {variant!r} has a run mean that is not a positive number: {means.tolist()}")


def _log_ratio(baseline, treatment, better, axis=-1):
    """log of the ratio of means, > 0 when the treatment is better. Vectorised along `axis`."""
    log_gain = np.log(np.mean(baseline, axis=axis)) - np.log(np.mean(treatment, axis=axis))
    return log_gain if better == "lower" else -log_gain


def _log_mean(sample, axis=-1):
    return np.log(np.mean(sample, axis=axis))


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

    interval = _bootstrap((baseline_means, treatment_means), statistic, thresholds)
    if interval is None:
        point = float(np.exp(statistic(baseline_means, treatment_means)))
        return point, point
    low, high = interval
    return float(np.exp(low)), float(np.exp(high))


def _bootstrap(samples: tuple[np.ndarray, ...], statistic, thresholds: Thresholds) -> tuple[float, float] | None:
    """The statistic's interval: BCa, else percentile; None when neither gives a usable one."""
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = stats.bootstrap(
                samples,
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
            return float(low), float(high)
    return None


# --- how sure a verdict is ---------------------------------------------------------

NOISE_FLOOR = 0.01  # the smallest no-difference margin noise_margin gives


def relative_half_width(ci_low: float, ci_high: float) -> float:
    """(ci_high / ci_low) ** 0.5 - 1: the interval's half-width on the log scale, as a ratio.

    0.05 means the interval reaches about 5% either side of its geometric centre.
    """
    if not (ci_low > 0 and ci_high >= ci_low):
        raise ValueError(f"an interval needs 0 < ci_low <= ci_high, got {ci_low}-{ci_high}")
    return math.sqrt(ci_high / ci_low) - 1


def runs_needed(
    n_runs: float, ci_low: float, ci_high: float, measured: float, claimed: float, k: float
) -> int | None:
    """About how many runs per variant would shrink a straddling interval clear of claimed/k.

    An interval's half-width falls as 1/sqrt(runs). With h its half-width on the log scale
    and d the distance from the measured ratio to claimed/k, also on the log scale,
    n * (h/d)^2 runs make h equal d -- if the spread of run means and the measured ratio
    stay as they are. That is where the interval's end just reaches claimed/k, so expect
    even odds of a decision there; about twice as many give good odds. At least
    n_runs + 1, since n_runs did not decide. None when the measured ratio sits on
    claimed/k (d = 0): no number of runs is sure to decide. For unequal run counts pass
    their harmonic mean.
    """
    if not (ci_low > 0 and ci_high > 0 and measured > 0 and claimed > 0 and k > 0):
        raise ValueError("runs_needed needs positive ratios and k")
    half_width = (math.log(ci_high) - math.log(ci_low)) / 2
    distance = abs(math.log(measured) - math.log(claimed / k))
    if distance == 0:
        return None
    estimate = math.ceil(n_runs * (half_width / distance) ** 2 - 1e-9)  # 5 * 1.0 must stay 5, not 6
    return max(estimate, math.floor(n_runs) + 1)


def _runs_per_variant(n_baseline: int, n_treatment: int) -> float:
    """The equal run count per side that gives the same interval width as these two counts."""
    return 2 * n_baseline * n_treatment / (n_baseline + n_treatment)


def noise_margin(values: pd.DataFrame, variant: str, thresholds: Thresholds = Thresholds()) -> float:
    """A no-difference margin from this host's own noise: an A/A estimate from one variant's runs.

    Compared with itself, a variant would give a ratio of 1 give or take the spread of its
    run means; the relative half-width of the bootstrap interval of its mean of run means
    (the ratio's method, confidence, resamples and seed) measures that spread. Floored at
    NOISE_FLOOR, so that a very quiet host does not call a 1% difference a gain.
    """
    means = run_means(values, variant)
    if len(means) < 2:
        raise ValueError(f"variant {variant!r} has {len(means)} run(s); an A/A noise estimate needs at least 2")
    _check_positive(variant, means)
    interval = _bootstrap((means,), _log_mean, thresholds)
    width = 0.0 if interval is None else relative_half_width(math.exp(interval[0]), math.exp(interval[1]))
    return max(NOISE_FLOOR, width)


# --- pyperf's opinion ---------------------------------------------------------------------

_NOT_SIGNIFICANT = re.compile(r"\bnot significant\b", re.IGNORECASE)
# "Significant (t=12.34)" in verbose output; "1.28x faster" / "1.28x slower" otherwise.
_SIGNIFICANT = re.compile(r"\bSignificant \(t=|\b\d+(?:\.\d+)?x (?:faster|slower)\b")


def pyperf_significant(line: str) -> bool | None:
    """Whether `python -m pyperf compare_to A.json B.json` found a significant difference.

    `line` is its output, one line or all of it. pyperf prints a "Mean +- std dev: ... 1.28x
    faster" line only for a significant difference, "Benchmark hidden because not
    significant (1): NAME" otherwise; with -v it prints the mean line either way, followed
    by "Significant (t=...)" or "Not significant!", which therefore wins. None when the text
    says neither.
    """
    if _NOT_SIGNIFICANT.search(line):
        return False
    if _SIGNIFICANT.search(line):
        return True
    return None


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


# --- the verdict ----------------------------------------------------------------

RUN_INVALID_RULE = "run invalid"
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

    fraction_of_claim is (measured - 1) / (claimed - 1), given only for a partial
    reproduction, where it says how much of the claimed gain was found. `invalid` is why
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
    needed = runs_needed(_runs_per_variant(n_baseline, n_treatment), ci_low, ci_high, measured, claimed, thresholds.k)
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
