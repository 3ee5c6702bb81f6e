import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from harness.results.analyse import (
    NOISE_FLOOR,
    Thresholds,
    noise_margin,
    pyperf_significant,
    relative_half_width,
    run_means,
    runs_needed,
    summarise,
)
from harness.results.verdicts import VERDICTS, PairVerdict, compare_pair, cross_check, decide

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


def test_not_applicable_wins_over_an_invalid_run():
    verdict, rule, reason, _ = decide(3.5, 4.0, 3.9, 4.1, 5, 5, T, "No IPv6 on the hosts.", invalid="swap")
    assert (verdict, rule, reason) == ("not applicable", "not applicable", "No IPv6 on the hosts.")


def test_rule_2_an_invalid_run_is_inconclusive_with_its_reason():
    why = "the load generator used 97% of a core while the server had headroom (run 3 of nginx_sendfile_on)"
    verdict, rule, reason, fraction = decide(3.5, 4.0, 3.9, 4.1, 5, 5, T, invalid=why)
    assert (verdict, rule, reason, fraction) == ("inconclusive", "retry budget exhausted", why, None)


def test_rule_2_an_invalid_run_comes_before_the_run_count():
    verdict, rule, *_ = decide(3.5, 4.0, 3.9, 4.1, 1, 1, T, invalid="CPU steal 12%")
    assert rule == "retry budget exhausted"


def test_rule_3_too_few_runs_is_inconclusive_even_with_a_clear_interval():
    verdict, rule, reason, _ = decide(3.5, 4.0, 3.9, 4.1, 2, 5, T)
    assert verdict == "inconclusive"
    assert rule == "runs < min_runs"
    assert "2 baseline" in reason and "at least 3" in reason


def test_rule_4_reproduced_when_interval_reaches_claim_over_k():
    verdict, rule, reason, _ = decide(3.5, 3.0, 2.8, 3.2, 5, 5, T)
    assert verdict == "reproduced"
    assert rule == "ci_low >= claimed/k"
    assert "2.8x" in reason and "95%" in reason


def test_rule_4_just_below_claim_over_k_is_not_reproduced():
    verdict, *_ = decide(3.5, 3.0, 2.79, 3.2, 5, 5, T)
    assert verdict != "reproduced"


def test_larger_effect_when_the_interval_lies_wholly_above_claim_times_k():
    # TCP_NODELAY against Nagle: claimed 40x, measured 379x [349, 403].
    verdict, rule, reason, fraction = decide(40, 379, 349, 403, 5, 5, T)
    assert (verdict, rule, fraction) == ("larger effect", "ci_low > claimed*k", None)
    assert "40x*1.25 = 50x" in reason and "claim's size is wrong" in reason


def test_an_interval_reaching_down_to_claim_times_k_is_still_reproduced():
    assert decide(40, 60, 50, 70, 5, 5, T)[0] == "reproduced"
    assert decide(40, 60, 50.01, 70, 5, 5, T)[0] == "larger effect"


def test_rule_5_slower_treatment_is_reversed():
    verdict, rule, reason, fraction = decide(3.5, 0.5, 0.45, 0.55, 5, 5, T)
    assert verdict == "reversed"
    assert rule == "ci_high < 1/(1 + margin)"
    assert "significantly worse" in reason
    assert fraction is None


def test_slower_only_within_the_margin_is_no_effect_not_reversed():
    # 1/1.05 = 0.952: an interval ending at 0.96 is worse by less than the margin.
    assert decide(3.5, 0.93, 0.90, 0.96, 5, 5, T)[0] == "no effect"
    assert decide(3.5, 0.92, 0.90, 0.95, 5, 5, T)[0] == "reversed"


def test_rule_6_no_effect():
    verdict, rule, reason, _ = decide(3.5, 1.02, 0.98, 1.06, 5, 5, T)
    assert verdict == "no effect"
    assert rule == "ci_high < claimed/k and ci_low <= 1 + margin"
    assert "no difference beyond the margin" in reason and "0.952x-1.05x" in reason


def test_rule_6_interval_touching_the_margin_counts_as_no_effect():
    verdict, *_ = decide(3.5, 1.2, 1.05, 1.3, 5, 5, T)
    assert verdict == "no effect"


def test_rule_7_smaller_effect_reports_the_fraction_of_the_claimed_gain():
    verdict, rule, reason, fraction = decide(3.5, 2.0, 1.9, 2.2, 5, 5, T)
    assert verdict == "smaller effect"
    assert rule == "ci_low > 1 + margin and ci_high < claimed/k"
    assert fraction == pytest.approx(0.4)
    assert reason == (
        "The 95% interval 1.9x-2.2x lies below 3.5x/1.25 = 2.8x but above 1.05x: "
        "the treatment is better, by 40% of the claimed gain."
    )


def test_rule_8_interval_straddling_claim_over_k_is_inconclusive():
    verdict, rule, reason, _ = decide(3.5, 2.5, 1.2, 4.1, 5, 5, T)
    assert verdict == "inconclusive"
    assert rule == "ci_low < claimed/k <= ci_high"
    assert "straddles" in reason


def test_rule_8_says_how_many_runs_would_decide():
    # h = log(4) / 2 = log 2; d = |log 1.4 - log 2.8| = log 2: as many runs again would do, but at least 6
    _, _, reason, _ = decide(3.5, 1.4, 0.7, 2.8, 5, 5, T)
    assert reason.endswith("about 6 runs per variant would decide it.")
    # h = log(16) / 2 = 2 log 2; d = log 2: four times the runs
    _, _, reason, _ = decide(3.5, 1.4, 0.35, 5.6, 5, 5, T)
    assert reason.endswith("about 20 runs per variant would decide it.")


def test_rule_8_with_unequal_run_counts_uses_their_harmonic_mean():
    # 3 and 6 runs give the interval width of 4 runs each
    _, _, reason, _ = decide(3.5, 1.4, 0.35, 5.6, 3, 6, T)
    assert "about 16 runs per variant" in reason


def test_rule_8_on_claim_over_k_names_no_number():
    _, rule, reason, _ = decide(3.5, 2.8, 2.0, 4.0, 5, 5, T)
    assert rule == "ci_low < claimed/k <= ci_high"
    assert "runs per variant" not in reason and "sits on claimed/k" in reason


def test_rule_8_also_when_interval_spans_one_and_claim_over_k():
    verdict, *_ = decide(3.5, 1.5, 0.8, 3.0, 5, 5, T)
    assert verdict == "inconclusive"


def test_missing_interval_with_enough_runs_is_inconclusive():
    verdict, rule, _, _ = decide(3.5, 2.0, math.nan, 2.2, 5, 5, T)
    assert verdict == "inconclusive"
    assert rule == "no interval"


def test_k_and_margin_come_from_thresholds():
    strict = Thresholds(k=1.0, margin=0.5)
    assert decide(3.5, 3.0, 2.8, 3.2, 5, 5, strict)[0] == "smaller effect"
    assert decide(3.5, 1.4, 1.3, 1.5, 5, 5, strict)[0] == "no effect"
    assert decide(3.5, 3.6, 3.55, 3.7, 5, 5, strict)[0] == "larger effect"


def test_every_verdict_is_a_known_one():
    cases = [
        (3.5, 4, 3.9, 4.1),
        (3.5, 0.5, 0.4, 0.6),
        (3.5, 1.0, 0.9, 1.1),
        (3.5, 2.0, 1.9, 2.1),
        (3.5, 2.0, 1.0, 4.0),
        (3.5, 10, 9, 11),
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


def test_2x_gain_against_a_35x_claim_is_a_smaller_effect(twice_as_fast):
    result = compare(twice_as_fast, claimed=3.5)
    assert result.verdict == "smaller effect"
    assert result.fraction_of_claim == pytest.approx(0.4)


def test_2x_gain_against_a_2x_claim_is_reproduced(twice_as_fast):
    assert compare(twice_as_fast, claimed=2.0).verdict == "reproduced"


def test_slower_treatment_is_reversed(twice_as_fast):
    result = compare(twice_as_fast, claimed=3.5, baseline="sendfile", treatment="readwrite")
    assert result.measured_ratio == pytest.approx(0.5)
    assert result.verdict == "reversed"
    assert "significantly worse" in result.reason


def test_sendfile_nginx_at_135x_against_35x_is_a_smaller_effect():
    # The case: nginx 1.35x [1.23, 1.47] against a claimed 3.5x.
    verdict, _, reason, fraction = decide(3.5, 1.35, 1.23, 1.47, 5, 5, T)
    assert verdict == "smaller effect" and fraction == pytest.approx(0.14)
    assert "14% of the claimed gain" in reason


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
    from harness.results import analyse

    real_bootstrap = analyse.stats.bootstrap

    def failing_bca(*args, method, **kwargs):
        result = real_bootstrap(*args, method=method, **kwargs)
        if method == "BCa":
            interval = type(result.confidence_interval)
            if failure == "nan":
                result.confidence_interval = interval(math.nan, math.nan)
            else:  # a finite but meaningless interval, flagged only by the warning
                warnings.warn("degenerate", analyse.stats.DegenerateDataWarning, stacklevel=2)
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


def test_invalid_is_passed_through_and_the_measurement_kept(twice_as_fast):
    result = compare(twice_as_fast, claimed=2.0, invalid="swap: 4096 pages swapped in run 2 of sendfile")
    assert (result.verdict, result.rule) == ("inconclusive", "retry budget exhausted")
    assert result.reason == "swap: 4096 pages swapped in run 2 of sendfile"
    assert result.measured_ratio == pytest.approx(2.0)
    assert result.ci_low < 2.0 < result.ci_high
    assert result.runs_needed is None


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
    assert data["verdict"] == "smaller effect"


def test_as_dict_has_half_width_and_runs_needed():
    values = make_values({"readwrite": 2.0, "sendfile": 1.0}, runs=4, per_run=1, noise=0.25, seed=3)
    data = compare(values, claimed=3.0).as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["rule"] == "ci_low < claimed/k <= ci_high"
    assert type(data["runs_needed"]) is int and data["runs_needed"] > 4
    assert data["half_width"] == pytest.approx(relative_half_width(data["ci_low"], data["ci_high"]))
    assert f"about {data['runs_needed']} runs per variant" in data["reason"]


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
    assert list(summary.columns) == ["n", "runs", "mean", "median", "stdev", "min", "max", "cv", "run_cv"]
    b = summary.loc["b"]
    assert (b["n"], b["runs"]) == (4, 2)
    assert b["mean"] == pytest.approx(4.0)
    assert b["median"] == pytest.approx(4.0)
    assert b["stdev"] == pytest.approx(np.std([1, 3, 5, 7], ddof=1))
    assert (b["min"], b["max"]) == (1.0, 7.0)
    assert summary.loc["a", "median"] == pytest.approx(4.0)


def test_summarise_cv_of_values_and_of_run_means(small):
    summary = summarise(small)
    assert summary.loc["b", "cv"] == pytest.approx(np.std([1, 3, 5, 7], ddof=1) / 4.0)
    # b's runs average 2 and 6; a has one value per run, so both spreads are the same
    assert summary.loc["b", "run_cv"] == pytest.approx(np.std([2, 6], ddof=1) / 4.0)
    assert summary.loc["a", "run_cv"] == pytest.approx(summary.loc["a", "cv"])


def test_summarise_run_cv_is_nan_for_a_single_run():
    summary = summarise(pd.DataFrame({"variant": ["x", "x"], "run": [0, 0], "value": [1.0, 2.0]}))
    assert math.isnan(summary.loc["x", "run_cv"])
    assert summary.loc["x", "cv"] == pytest.approx(np.std([1, 2], ddof=1) / 1.5)


def test_an_order_column_is_accepted_and_changes_nothing(twice_as_fast):
    ordered = twice_as_fast.assign(order=twice_as_fast["run"] * 2 + (twice_as_fast["variant"] == "sendfile"))
    pd.testing.assert_frame_equal(summarise(ordered), summarise(twice_as_fast))
    np.testing.assert_array_equal(run_means(ordered, "sendfile"), run_means(twice_as_fast, "sendfile"))
    assert compare(ordered, claimed=3.5) == compare(twice_as_fast, claimed=3.5)


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


# --- half-width and runs needed -------------------------------------------------------


@pytest.mark.parametrize("low, high, width", [(1.0, 1.21, 0.1), (0.5, 2.0, 1.0), (2.0, 2.0, 0.0)])
def test_relative_half_width(low, high, width):
    assert relative_half_width(low, high) == pytest.approx(width)


def test_relative_half_width_rejects_a_reversed_interval():
    with pytest.raises(ValueError, match="ci_low"):
        relative_half_width(2.0, 1.0)


def test_half_width_of_a_verdict(twice_as_fast):
    result = compare(twice_as_fast, claimed=3.5)
    assert result.half_width == pytest.approx((result.ci_high / result.ci_low) ** 0.5 - 1)
    assert 0 < result.half_width < 0.025  # the interval is narrower than 5% in all
    assert compare(twice_as_fast, claimed=3.5, treatment="splice").half_width is None


def test_runs_needed_follows_the_square_of_half_width_over_distance():
    # measured 1.4, claimed/k = 2.8: d = log 2
    assert runs_needed(5, 0.35, 5.6, 1.4, 3.5, 1.25) == 20  # h = 2 log 2
    assert runs_needed(10, 0.7, 2.8, 1.4, 3.5, 1.25) == 11  # h = d: one more than now
    assert runs_needed(5, 1.0, 4.0, 2.0, 2.5, 1.25) is None  # d = 0


def test_runs_needed_is_only_given_for_a_straddling_interval(twice_as_fast):
    assert compare(twice_as_fast, claimed=3.5).runs_needed is None  # partially reproduced


def test_runs_needed_agrees_with_theory_on_average():
    # Runs with a 25% spread, ratio 2 against claimed/k = 2.4: the interval's half-width on the
    # log scale is about 1.96 * sqrt(2 * 0.25^2 / n), which equals d = log 1.2 at n = 14.4.
    theory = 2 * (1.96 * 0.25 / math.log(1.2)) ** 2
    predictions = [
        compare(
            make_values({"readwrite": 2.0, "sendfile": 1.0}, runs=6, per_run=1, noise=0.25, seed=seed), claimed=3.0
        ).runs_needed
        for seed in range(15)
    ]
    straddling = [n for n in predictions if n is not None]
    assert len(straddling) >= 10
    assert np.median(straddling) == pytest.approx(theory, rel=0.3)


# --- the A/A noise margin -----------------------------------------------------------------


def test_noise_margin_grows_with_the_baseline_noise():
    quiet = noise_margin(make_values({"readwrite": 2.0}, noise=0.05), "readwrite", T)
    loud = noise_margin(make_values({"readwrite": 2.0}, noise=0.3), "readwrite", T)
    assert NOISE_FLOOR < quiet < loud


def test_noise_margin_is_about_the_interval_of_the_mean_of_run_means():
    rng = np.random.default_rng(11)
    means = 2.0 * (1 + rng.normal(0, 0.04, 40))
    values = pd.DataFrame({"variant": "readwrite", "run": np.arange(40), "value": means})
    expected = 1.96 * np.std(means, ddof=1) / np.mean(means) / math.sqrt(40)
    assert noise_margin(values, "readwrite", T) == pytest.approx(expected, rel=0.15)


def test_noise_margin_uses_only_its_variant_and_the_thresholds():
    values = make_values({"readwrite": 2.0, "sendfile": 1.0}, noise=0.1)
    noisier_treatment = pd.concat([values[values["variant"] == "readwrite"], make_values({"sendfile": 1.0}, noise=0.5)])
    assert noise_margin(values, "readwrite", T) == noise_margin(noisier_treatment, "readwrite", T)
    assert noise_margin(values, "readwrite", Thresholds(confidence=0.99)) > noise_margin(values, "readwrite", T)


def test_noise_margin_is_floored_for_a_silent_host():
    identical = pd.DataFrame({"variant": "readwrite", "run": [0, 1, 2, 3], "value": 2.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert noise_margin(identical, "readwrite", T) == NOISE_FLOOR


def test_noise_margin_needs_two_runs():
    one_run = make_values({"readwrite": 2.0}, runs=1)
    with pytest.raises(ValueError, match="readwrite.*1 run"):
        noise_margin(one_run, "readwrite", T)


def test_thresholds_record_where_the_margin_came_from():
    assert Thresholds().margin_source == "default"
    aa = Thresholds(margin=0.021, margin_source="A/A noise of python_readwrite")
    assert (aa.margin, aa.margin_source) == (0.021, "A/A noise of python_readwrite")
    with pytest.raises(ValueError, match="margin_source"):
        Thresholds(margin_source=" ")


# --- pyperf cross-check ---------------------------------------------------------------------

# As printed by pyperf 2.11 `python -m pyperf compare_to A.json B.json` (last line; -v where marked).
FASTER = "Mean +- std dev: [readwrite] 412 ms +- 104 ms -> [sendfile] 321 ms +- 100 ms: 1.28x faster"
SLOWER = "Mean +- std dev: [readwrite] 412 ms +- 1 ms -> [sendfile] 800 ms +- 1 ms: 1.94x slower"
HIDDEN = "Benchmark hidden because not significant (1): sendfile_3x"
VERBOSE_NOT = "Mean +- std dev: [readwrite] 412 ms +- 1 ms -> [sendfile] 412 ms +- 1 ms: 1.00x slower\nNot significant!"
VERBOSE_YES = (
    "Mean +- std dev: [readwrite] 412 ms +- 1 ms -> [sendfile] 200 ms +- 1 ms: 2.06x faster\nSignificant (t=837.51)"
)


@pytest.mark.parametrize(
    "line, significant",
    [
        (FASTER, True),
        (SLOWER, True),
        ("Not significant!", False),
        (HIDDEN, False),
        (VERBOSE_NOT, False),
        (VERBOSE_YES, True),
        ("| sendfile_3x | 412 ms | 200 ms: 2.06x faster |", True),
        ("ERROR: Benchmark suites have no benchmark in common", None),
        ("no pyperf files (no completed runs)", None),
        ("", None),
    ],
)
def test_pyperf_significant(line, significant):
    assert pyperf_significant(line) is significant


def test_pyperf_significant_reads_what_pyperf_prints(tmp_path):
    pyperf = pytest.importorskip("pyperf")

    def dump(name, values):
        runs = [
            pyperf.Run(
                list(run), metadata={"name": "sendfile_3x", "unit": "second", "loops": 1}, collect_metadata=False
            )
            for run in values
        ]
        pyperf.Benchmark(runs).dump(str(tmp_path / f"{name}.json"))
        return str(tmp_path / f"{name}.json")

    slow = dump("readwrite", [[0.412, 0.413, 0.411]] * 4)
    fast = dump("sendfile", [[0.200, 0.201, 0.199]] * 4)
    same = dump("readwrite_again", [[0.413, 0.411, 0.412]] * 4)

    def last_line(a, b):
        done = subprocess.run(
            [sys.executable, "-m", "pyperf", "compare_to", a, b], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0 and done.stderr == ""
        return done.stdout.strip().splitlines()[-1]

    assert pyperf_significant(last_line(slow, fast)) is True
    assert pyperf_significant(last_line(slow, same)) is False


def _verdict(ci_low, ci_high):
    return PairVerdict(
        "sendfile_vs_readwrite",
        "readwrite",
        "sendfile",
        3.5,
        (ci_low * ci_high) ** 0.5,
        ci_low,
        ci_high,
        0.95,
        5,
        6,
        "inconclusive",
        "r",
        "why",
        None,
    )


@pytest.mark.parametrize(
    "ci_low, ci_high, line", [(1.2, 1.4, FASTER), (0.5, 0.6, SLOWER), (0.9, 1.1, HIDDEN), (0.9, 1.1, VERBOSE_NOT)]
)
def test_cross_check_is_silent_when_both_agree(ci_low, ci_high, line):
    assert cross_check(_verdict(ci_low, ci_high), line) is None


def test_cross_check_explains_pyperf_seeing_a_difference_we_do_not():
    note = cross_check(_verdict(0.95, 1.4), FASTER)
    assert note.startswith("pyperf finds a significant difference but our 95% interval 0.95x-1.4x includes 1x.")
    assert "t-test on every value" in note and "5 and 6 runs" in note


def test_cross_check_explains_us_seeing_a_difference_pyperf_does_not():
    note = cross_check(_verdict(1.1, 1.3), HIDDEN)
    assert note.startswith("our 95% interval 1.1x-1.3x excludes 1x but pyperf finds no significant difference.")
    assert "run means" in note


def test_cross_check_without_an_answer_on_either_side_is_silent():
    assert cross_check(_verdict(1.1, 1.3), "pyperf compare_to printed nothing") is None
    no_interval = PairVerdict("p", "a", "b", 3.5, None, None, None, 0.95, 0, 0, "not applicable", "r", "why", None)
    assert cross_check(no_interval, FASTER) is None
