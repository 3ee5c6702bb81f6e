"""Measured values -> summaries and ratios with intervals: the statistics behind a verdict.

Pure functions: a DataFrame in, numbers and frozen objects out; no files, no
printing. The unit of analysis is the run: values within one run (several
transfers) share the same server process and host state, so they are averaged
first and only the run means are resampled.

A ratio is always oriented so that > 1 means the treatment is better, whatever
the metric's direction; the claimed ratio is compared on that scale.

Besides the interval it says how sure a verdict can be: the interval's relative
half-width, the runs a straddling interval would need to decide, an A/A noise
estimate of one variant that can serve as the no-difference margin, and whether
pyperf's own comparison of the same runs finds a significant difference.
`harness.results.verdicts` turns these numbers into the words. `ratio_difference` says
whether two runs' ratios differ by more than their noise (for `harness compare`).

The values DataFrame has columns variant, run, value; an `order` column (the
trial's position in the run, from 0) may be present and is used only by charts.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

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


def summarise(values: pd.DataFrame) -> pd.DataFrame:
    """Per variant, in order of first appearance: n, runs, mean, median, stdev, min, max, cv, run_cv.

    cv is stdev / mean of the single values; run_cv is the same of the per-run means, the
    spread the interval is computed from. Both are NaN when there are fewer than two.
    """
    check_columns(values)
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
    check_columns(values)
    rows = values[values["variant"] == variant]
    return rows.groupby("run", sort=True)["value"].mean().to_numpy(dtype=float)


def check_columns(values: pd.DataFrame) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in values.columns]
    if missing:
        raise ValueError(f"values lack column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")


def check_positive(variant: str, means: np.ndarray) -> None:
    if np.any(~np.isfinite(means)) or np.any(means <= 0):
        raise ValueError(f"variant {variant!r} has a run mean that is not a positive number: {means.tolist()}")


def log_ratio(baseline, treatment, better, axis=-1):
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
        return log_ratio(baseline, treatment, better, axis=axis)

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


def runs_needed(n_runs: float, ci_low: float, ci_high: float, measured: float, claimed: float, k: float) -> int | None:
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


def runs_per_variant(n_baseline: int, n_treatment: int) -> float:
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
    check_positive(variant, means)
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


# --- is the difference between two runs real? ------------------------------------------


@dataclass(frozen=True)
class Difference:
    """Another run's ratio against the reference run's, on the ratio scale: other / reference."""

    ratio: float | None  # > 1: the other run measured a larger gain
    low: float | None
    high: float | None
    p_value: float | None
    significant: bool | None  # None: a run has fewer than two run means per side
    reason: str = ""


def ratio_difference(
    reference: pd.DataFrame,
    other: pd.DataFrame,
    baseline: str,
    treatment: str,
    better: str,
    thresholds: Thresholds = Thresholds(),
) -> Difference:
    """Whether two runs' ratios of `treatment` against `baseline` differ by more than noise.

    Method: each run's interval of the log ratio comes from analyse.ratio_interval (the
    bootstrap of its run means that its verdict used); its standard error is read off the
    interval as (log ci_high - log ci_low) / (2 z), z the normal quantile of the confidence.
    The runs are independent, so the difference d of their log ratios has standard error
    se = sqrt(se_ref² + se_other²) (Altman and Bland, BMJ 2003). Two small-sample
    corrections keep the test at its nominal level with the 3-12 runs a run has: each se is
    scaled by sqrt(n / (n - 1)), n the mean runs per variant (the bootstrap spreads by the
    plug-in variance, which divides by n), and d / se is referred to Student's t with
    Welch-Satterthwaite degrees of freedom, each run giving n_baseline + n_treatment - 2.
    (Without them, runs of 5 came out "significant" in 10% of A/A pairs instead of 5%.)
    The difference is significant when the interval d ± t * se excludes 0, i.e. when the
    interval of other/reference excludes 1; p is the two-sided t probability. When both
    intervals have no width (identical run means) any difference counts as significant
    and none as not.
    """
    means = {
        name: (run_means(frame, baseline), run_means(frame, treatment))
        for name, frame in (("reference", reference), ("other", other))
    }
    short = [name for name, (base, treat) in means.items() if min(len(base), len(treat)) < 2]
    if short:
        return Difference(
            None, None, None, None, None, f"the {' and '.join(short)} run has fewer than two run means of a variant"
        )
    if not all(np.all(np.isfinite(side)) and np.all(side > 0) for pair in means.values() for side in pair):
        return Difference(None, None, None, None, None, "a run mean is not a positive number")
    z = stats.norm.ppf(1 - (1 - thresholds.confidence) / 2)
    logs, errors, freedoms = [], [], []
    for base, treat in means.values():
        low, high = ratio_interval(base, treat, better, thresholds)
        gain = math.log(np.mean(base)) - math.log(np.mean(treat))
        logs.append(gain if better == "lower" else -gain)
        runs = (len(base) + len(treat)) / 2
        errors.append((math.log(high) - math.log(low)) / (2 * z) * math.sqrt(runs / (runs - 1)))
        freedoms.append(len(base) + len(treat) - 2)
    difference = logs[1] - logs[0]
    error = math.hypot(*errors)
    if error == 0:
        significant = difference != 0
        return Difference(
            math.exp(difference),
            math.exp(difference),
            math.exp(difference),
            0.0 if significant else 1.0,
            significant,
            "both runs' intervals have no width",
        )
    freedom = error**4 / sum(e**4 / f for e, f in zip(errors, freedoms, strict=True) if e > 0)
    quantile = stats.t.ppf(1 - (1 - thresholds.confidence) / 2, freedom)
    p_value = float(2 * stats.t.sf(abs(difference) / error, freedom))
    low, high = math.exp(difference - quantile * error), math.exp(difference + quantile * error)
    return Difference(math.exp(difference), low, high, p_value, bool(low > 1 or high < 1))
