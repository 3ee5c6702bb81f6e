"""Fixtures of the unit tier: two variants whose true ratio is 2.0, their verdict and charts
(shared by test_charts and test_report)."""

import numpy as np
import pandas as pd
import pytest

from harness.results.charts import distribution_svg, ratio_svg, run_sequence_svg, run_values_svg
from harness.results.verdicts import compare_pair


@pytest.fixture(scope="module")
def values():
    """Five runs of two values each; the trials alternate, readwrite first."""
    rng = np.random.default_rng(3)
    rows = [
        (variant, run, mean + rng.normal(0, 0.02))
        for variant, mean in (("readwrite", 2.0), ("sendfile", 1.0))
        for run in range(5)
        for _ in range(2)
    ]
    values = pd.DataFrame(rows, columns=["variant", "run", "value"])
    return values.assign(order=values["run"] * 2 + (values["variant"] == "sendfile"))


@pytest.fixture(scope="module")
def verdicts(values):
    return [
        compare_pair(
            values,
            pair="sendfile_vs_readwrite",
            baseline="readwrite",
            treatment="sendfile",
            claimed_ratio=3.5,
            better="lower",
        )
    ]


@pytest.fixture(scope="module")
def charts(values, verdicts):
    variants = ["readwrite", "sendfile"]
    return {
        "values": run_values_svg(values, variants, "s"),
        "ratios": ratio_svg(verdicts),
        "sequence": run_sequence_svg(values, variants, "s"),
        "distribution": distribution_svg(values, variants, "s"),
    }
