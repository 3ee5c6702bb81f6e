import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from harness.analyse import (
    VERDICTS,
    PairVerdict,
    Thresholds,
    compare_pair,
    decide,
    run_means,
    summarise,
)

T = Thresholds()  # k 1.25, margin 0.05, min_runs 3


def make_values(means: dict[str, float], runs: int = 6, per_run: int = 3, noise: float = 0.01, seed: int = 7):
    """Each variant's values scattered around its mean, seeded, and centred so that the
    mean of run means is exactly `mean`: the true ratio is then known to the last digit."""
    rng = np.random.default_rng(seed)
    frames = []
    for variant, mean in means.items():
        scatter = rng.normal(0, noise, runs * per_run)
        frames.append(
            pd.DataFrame(
                {
                    "variant": variant,
                    "run": np.repeat(np.arange(runs), per_run),
                    "value": mean * (1 + scatter - scatter.mean()),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def compare(values, claimed, better="lower", baseline="readwrite", treatment="sendfile", **kwargs):
    return compare_pair(
        values,
        pair="sendfile_vs_readwrite",
        baseline=baseline,
        treatment=treatment,
        claimed_ratio=claimed,
        better=better,
        **kwargs,
    )


# --- decide: one test per rule, in order ---------------------------------------


def test_rule_1_not_applicable_wins_over_everything():
    verdict, rule, reason, fraction = decide(3.5, None, None, None, 0, 0, T, not_applicable="No IPv6 on the hosts.")
    assert (verdict, reason, fraction) == ("not applicable", "No IPv6 on the hosts.", None)


def test_rule_2_too_few_runs_is_inconclusive_even_with_a_clear_interval():
    verdict, rule, reason, _ = decide(3.5, 4.0, 3.9, 4.1, 2, 5, T)
    assert verdict == "inconclusive"
    assert rule == "runs < min_runs"
    assert "2 baseline" in reason and "at least 3" in reason


def test_rule_3_reproduced_when_interval_reaches_claim_over_k():
    verdict, rule, reason, _ = decide(3.5, 3.0, 2.8, 3.2, 5, 5, T)
    assert verdict == "reproduced"
    assert rule == "ci_low >= claimed/k"
    assert "2.8x" in reason and "95%" in reason


def test_rule_3_just_below_claim_over_k_is_not_reproduced():
    verdict, *_ = decide(3.5, 3.0, 2.79, 3.2, 5, 5, T)
    assert verdict != "reproduced"


def test_rule_4_slower_treatment_contradicts_the_claim():
    verdict, rule, reason, fraction = decide(3.5, 0.5, 0.45, 0.55, 5, 5, T)
    assert verdict == "not reproduced"
    assert rule == "ci_high < 1"
    assert "slower" in reason and "contradicted" in reason
    assert fraction is None


def test_rule_5_no_real_gain():
    verdict, rule, reason, _ = decide(3.5, 1.02, 0.98, 1.06, 5, 5, T)
    assert verdict == "not reproduced"
    assert rule == "ci_high < claimed/k and ci_low <= 1 + margin"
    assert "no real gain" in reason
    assert "contradicted" not in reason


def test_rule_5_interval_touching_the_margin_counts_as_no_gain():
    verdict, *_ = decide(3.5, 1.2, 1.05, 1.3, 5, 5, T)
    assert verdict == "not reproduced"


def test_rule_6_partial_reports_the_fraction_of_the_claimed_gain():
    verdict, rule, reason, fraction = decide(3.5, 2.0, 1.9, 2.2, 5, 5, T)
    assert verdict == "partially reproduced"
    assert rule == "ci_low > 1 + margin and ci_high < claimed/k"
    assert fraction == pytest.approx(0.4)
    assert reason == (
        "The 95% interval 1.9x-2.2x lies below 3.5x/1.25 = 2.8x but above 1.05x: "
        "the treatment is better, by 40% of the claimed gain."
    )


def test_rule_7_interval_straddling_claim_over_k_is_inconclusive():
    verdict, rule, reason, _ = decide(3.5, 2.5, 1.2, 4.1, 5, 5, T)
    assert verdict == "inconclusive"
    assert "straddles" in reason


def test_rule_7_also_when_interval_spans_one_and_claim_over_k():
    verdict, *_ = decide(3.5, 1.5, 0.8, 3.0, 5, 5, T)
    assert verdict == "inconclusive"


def test_missing_interval_with_enough_runs_is_inconclusive():
    verdict, rule, _, _ = decide(3.5, 2.0, math.nan, 2.2, 5, 5, T)
    assert verdict == "inconclusive"
    assert rule == "no interval"


def test_k_and_margin_come_from_thresholds():
    strict = Thresholds(k=1.0, margin=0.5)
    assert decide(3.5, 3.0, 2.8, 3.2, 5, 5, strict)[0] == "partially reproduced"
    assert decide(3.5, 1.4, 1.3, 1.5, 5, 5, strict)[0] == "not reproduced"


def test_every_verdict_is_a_known_one():
    cases = [
        (3.5, 4, 3.9, 4.1),
        (3.5, 0.5, 0.4, 0.6),
        (3.5, 1.0, 0.9, 1.1),
        (3.5, 2.0, 1.9, 2.1),
        (3.5, 2.0, 1.0, 4.0),
    ]
    found = {decide(*case, 5, 5, T)[0] for case in cases}
    assert found == set(VERDICTS) - {"not applicable"}


# --- compare_pair on synthetic runs ------------------------------------------------


@pytest.fixture(scope="module")
def twice_as_fast():
    return make_values({"readwrite": 2.0, "sendfile": 1.0})


def test_measured_ratio_and_interval_for_a_2x_gain(twice_as_fast):
    result = compare(twice_as_fast, claimed=3.5)
    assert result.measured_ratio == pytest.approx(2.0)
    assert result.ci_low < 2.0 < result.ci_high
    assert result.ci_low <= result.measured_ratio <= result.ci_high
    assert result.ci_high / result.ci_low < 1.05  # small noise, narrow interval
    assert (result.n_baseline, result.n_treatment) == (6, 6)
    assert result.confidence == 0.95


def test_2x_gain_against_a_35x_claim_is_partial(twice_as_fast):
    result = compare(twice_as_fast, claimed=3.5)
    assert result.verdict == "partially reproduced"
    assert result.fraction_of_claim == pytest.approx(0.4)


def test_2x_gain_against_a_2x_claim_is_reproduced(twice_as_fast):
    assert compare(twice_as_fast, claimed=2.0).verdict == "reproduced"


def test_slower_treatment_is_not_reproduced_and_contradicted(twice_as_fast):
    result = compare(twice_as_fast, claimed=3.5, baseline="sendfile", treatment="readwrite")
    assert result.measured_ratio == pytest.approx(0.5)
    assert result.verdict == "not reproduced"
    assert "contradicted" in result.reason


def test_two_runs_are_inconclusive():
    values = make_values({"readwrite": 2.0, "sendfile": 1.0}, runs=2)
    result = compare(values, claimed=2.0)
    assert result.verdict == "inconclusive"
    assert result.n_baseline == 2
    assert result.measured_ratio == pytest.approx(2.0)


def test_higher_is_better_puts_treatment_over_baseline():
    throughput = make_values({"readwrite": 100.0, "sendfile": 250.0})
    result = compare(throughput, claimed=2.5, better="higher")
    assert result.measured_ratio == pytest.approx(2.5)
    assert result.ci_low < 2.5 < result.ci_high
    assert result.verdict == "reproduced"


def test_lower_and_higher_give_reciprocal_ratios(twice_as_fast):
    lower = compare(twice_as_fast, claimed=2.0, better="lower")
    higher = compare(twice_as_fast, claimed=2.0, better="higher")
    assert higher.measured_ratio == pytest.approx(1 / lower.measured_ratio)


def test_identical_values_give_a_finite_interval_without_warnings():
    values = pd.DataFrame(
        [("readwrite", run, 2.0) for run in range(4)] + [("sendfile", run, 1.0) for run in range(4)],
        columns=["variant", "run", "value"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare(values, claimed=2.0)
    assert result.ci_low == pytest.approx(2.0)
    assert result.ci_high == pytest.approx(2.0)
    assert result.verdict == "reproduced"


@pytest.mark.parametrize("failure", ["nan", "degenerate warning"])
def test_percentile_interval_when_bca_fails(twice_as_fast, monkeypatch, failure):
    from harness import analyse

    real_bootstrap = analyse.stats.bootstrap

    def failing_bca(*args, method, **kwargs):
        result = real_bootstrap(*args, method=method, **kwargs)
        if method == "BCa":
            interval = type(result.confidence_interval)
            if failure == "nan":
                result.confidence_interval = interval(math.nan, math.nan)
            else:  # a finite but meaningless interval, flagged only by the warning
                warnings.warn("degenerate", analyse.stats.DegenerateDataWarning)
                result.confidence_interval = interval(-5.0, -4.0)
        return result

    monkeypatch.setattr(analyse.stats, "bootstrap", failing_bca)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare(twice_as_fast, claimed=3.5)
    assert result.ci_low < 2.0 < result.ci_high


def test_unequal_run_counts_are_resampled_independently():
    values = make_values({"readwrite": 2.0, "sendfile": 1.0}, runs=7)
    values = values[~((values["variant"] == "readwrite") & (values["run"] >= 4))]
    result = compare(values, claimed=2.0)
    assert (result.n_baseline, result.n_treatment) == (4, 7)
    assert result.ci_low < result.measured_ratio < result.ci_high


def test_noisy_data_gives_no_warnings(twice_as_fast):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare(twice_as_fast, claimed=3.5)


def test_interval_is_reproducible_with_the_same_seed_and_changes_with_another():
    values = make_values({"readwrite": 2.0, "sendfile": 1.0}, noise=0.1)
    first = compare(values, claimed=3.5, thresholds=Thresholds(seed=1))
    again = compare(values, claimed=3.5, thresholds=Thresholds(seed=1))
    other = compare(values, claimed=3.5, thresholds=Thresholds(seed=2))
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_higher_confidence_widens_the_interval():
    values = make_values({"readwrite": 2.0, "sendfile": 1.0}, noise=0.1)
    narrow = compare(values, claimed=3.5, thresholds=Thresholds(confidence=0.8))
    wide = compare(values, claimed=3.5, thresholds=Thresholds(confidence=0.99))
    assert wide.ci_low < narrow.ci_low and wide.ci_high > narrow.ci_high
    assert wide.confidence == 0.99


def test_not_applicable_is_passed_through(twice_as_fast):
    result = compare(twice_as_fast, claimed=3.5, not_applicable="The kernel lacks sendfile.")
    assert result.verdict == "not applicable"
    assert result.reason == "The kernel lacks sendfile."


def test_missing_variant_is_inconclusive_not_an_error(twice_as_fast):
    result = compare(twice_as_fast, claimed=3.5, treatment="splice")
    assert result.verdict == "inconclusive"
    assert result.n_treatment == 0
    assert result.measured_ratio is None


def test_bad_direction_and_bad_values_are_rejected(twice_as_fast):
    with pytest.raises(ValueError, match="better"):
        compare(twice_as_fast, claimed=3.5, better="faster")
    zero = twice_as_fast.assign(value=0.0)
    with pytest.raises(ValueError, match="positive"):
        compare(zero, claimed=3.5)


def test_as_dict_is_json_ready(twice_as_fast):
    data = compare(twice_as_fast, claimed=3.5).as_dict()
    assert json.loads(json.dumps(data)) == data
    assert type(data["ci_low"]) is float and type(data["n_baseline"]) is int
    assert data["verdict"] == "partially reproduced"


def test_as_dict_turns_nan_into_none():
    verdict = PairVerdict("p", "a", "b", 3.5, math.nan, None, None, 0.95, 2, 2, "inconclusive", "r", "why", None)
    data = verdict.as_dict()
    assert data["measured_ratio"] is None
    json.dumps(data, allow_nan=False)


def test_pair_verdict_rejects_an_unknown_verdict():
    with pytest.raises(ValueError, match="verdict"):
        PairVerdict("p", "a", "b", 3.5, 2.0, 1.9, 2.1, 0.95, 5, 5, "maybe", "r", "why", None)


@pytest.mark.parametrize(
    "field, value", [("k", 0.9), ("margin", -0.1), ("confidence", 1.0), ("resamples", 10), ("min_runs", 1)]
)
def test_thresholds_reject_nonsense(field, value):
    with pytest.raises(ValueError, match=field):
        Thresholds(**{field: value})


# --- summaries -----------------------------------------------------------------------


@pytest.fixture
def small():
    return pd.DataFrame(
        {
            "variant": ["b", "b", "b", "b", "a", "a", "a"],
            "run": [0, 0, 1, 1, 0, 1, 2],
            "value": [1.0, 3.0, 5.0, 7.0, 2.0, 4.0, 9.0],
        }
    )


def test_summarise_numbers(small):
    summary = summarise(small)
    assert list(summary.index) == ["b", "a"]  # order of first appearance
    assert list(summary.columns) == ["n", "runs", "mean", "median", "stdev", "min", "max"]
    b = summary.loc["b"]
    assert (b["n"], b["runs"]) == (4, 2)
    assert b["mean"] == pytest.approx(4.0)
    assert b["median"] == pytest.approx(4.0)
    assert b["stdev"] == pytest.approx(np.std([1, 3, 5, 7], ddof=1))
    assert (b["min"], b["max"]) == (1.0, 7.0)
    assert summary.loc["a", "median"] == pytest.approx(4.0)


def test_summarise_stdev_is_nan_for_a_single_value():
    summary = summarise(pd.DataFrame({"variant": ["x"], "run": [0], "value": [1.5]}))
    assert math.isnan(summary.loc["x", "stdev"])
    assert summary.loc["x", "n"] == 1


def test_run_means_average_within_each_run(small):
    np.testing.assert_allclose(run_means(small, "b"), [2.0, 6.0])
    np.testing.assert_allclose(run_means(small, "a"), [2.0, 4.0, 9.0])
    assert run_means(small, "missing").size == 0


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="run"):
        summarise(pd.DataFrame({"variant": ["x"], "value": [1.0]}))
