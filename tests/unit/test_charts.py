import re
import xml.etree.ElementTree as ElementTree
from itertools import combinations

import pandas as pd

from harness.results.analyse import Thresholds
from harness.results.charts import distribution_svg, ratio_svg, run_sequence_svg, run_values_svg
from harness.results.verdicts import compare_pair

VARIANTS = ["readwrite", "sendfile"]
SVG = "{http://www.w3.org/2000/svg}"


def _ids(svg: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', svg))


def _element(svg: str, element_id: str) -> ElementTree.Element:
    found = ElementTree.fromstring(svg).find(f".//*[@id='{element_id}']")
    assert found is not None, f"no element {element_id}"
    return found


def _line_points(svg: str, element_id: str) -> list[tuple[float, float]]:
    """The vertices of the first path in a group: [(x, y), ...] in SVG coordinates (y grows downwards)."""
    path = _element(svg, element_id).find(f"{SVG}path")
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.get("d"))]
    return list(zip(numbers[::2], numbers[1::2], strict=False))


def _dots(svg: str, element_id: str) -> int:
    return len(_element(svg, element_id).findall(f".//{SVG}use"))


# --- all charts -------------------------------------------------------------------------


def test_charts_are_bare_svg_elements(charts):
    for svg in charts.values():
        assert svg.startswith("<svg")
        assert svg.rstrip().endswith("</svg>")
        assert "<?xml" not in svg and "DOCTYPE" not in svg


def test_no_two_charts_share_an_id(charts):
    for first, second in combinations(charts, 2):
        first_ids, second_ids = _ids(charts[first]), _ids(charts[second])
        assert first_ids and second_ids
        assert not first_ids & second_ids, (first, second)


def test_every_reference_points_into_its_own_chart(charts):
    for svg in charts.values():
        references = set(re.findall(r'(?:url\(|href=")#([^")]+)', svg))
        assert references  # clip paths and markers are referenced
        assert references <= _ids(svg)


def test_charts_are_deterministic(values, verdicts, charts):
    assert run_values_svg(values, VARIANTS, "s") == charts["values"]
    assert ratio_svg(verdicts) == charts["ratios"]
    assert run_sequence_svg(values, VARIANTS, "s") == charts["sequence"]
    assert distribution_svg(values, VARIANTS, "s") == charts["distribution"]


def test_charts_keep_text_as_text(charts):
    assert "readwrite" in charts["values"] and "sendfile_vs_readwrite" in charts["ratios"]
    assert "smaller effect" in charts["ratios"]
    assert "readwrite" in charts["sequence"] and "sendfile" in charts["distribution"]


def test_charts_of_a_run_that_measured_nothing():
    empty = pd.DataFrame(
        {"variant": pd.Series(dtype=str), "run": pd.Series(dtype=int), "value": pd.Series(dtype=float)}
    )
    assert run_values_svg(empty, VARIANTS, "s").startswith("<svg")
    assert ratio_svg([]).startswith("<svg")
    assert run_sequence_svg(empty, VARIANTS, "s").startswith("<svg")
    assert distribution_svg(empty, VARIANTS, "s").startswith("<svg")


# --- ratios -----------------------------------------------------------------------------


def test_ratio_chart_marks_claim_over_k(verdicts):
    default = ratio_svg(verdicts)
    looser = ratio_svg(verdicts, Thresholds(k=2.0))
    assert "claimed/1.25" in default and "claimed/2" in looser


def test_ratio_chart_copes_with_a_pair_without_a_measurement(values):
    not_measured = compare_pair(
        values, pair="splice_vs_readwrite", baseline="readwrite", treatment="splice", claimed_ratio=2.0, better="lower"
    )
    assert "no measured ratio" in ratio_svg([not_measured])


# --- trial sequence ---------------------------------------------------------------------


def test_sequence_has_one_point_per_trial_in_the_order_they_ran(charts):
    readwrite = _line_points(charts["sequence"], "sequence-line-0")
    sendfile = _line_points(charts["sequence"], "sequence-line-1")
    assert len(readwrite) == len(sendfile) == 5
    xs = sorted([(x, "readwrite") for x, _ in readwrite] + [(x, "sendfile") for x, _ in sendfile])
    assert [name for _, name in xs] == ["readwrite", "sendfile"] * 5  # interleaved, readwrite first
    assert "trial order in the run" in charts["sequence"]


def test_sequence_falls_back_to_the_run_number(values):
    svg = run_sequence_svg(values.drop(columns="order"), VARIANTS, "s")
    readwrite = [x for x, _ in _line_points(svg, "sequence-line-0")]
    sendfile = [x for x, _ in _line_points(svg, "sequence-line-1")]
    assert readwrite == sendfile  # same run numbers, same places
    assert "run number" in svg


def test_sequence_shows_drift_as_a_slope(values):
    drifting = values.assign(value=values["value"] * (1 + 0.05 * values["order"]))
    ys = [y for _, y in _line_points(run_sequence_svg(drifting, VARIANTS, "s"), "sequence-line-0")]
    assert ys == sorted(ys, reverse=True)  # higher values are drawn higher up: smaller y


def test_sequence_points_are_trial_means():
    # readwrite's trials hold 1, 1, 4 (mean 2, median 1), sendfile's 2, 2, 2: the same mean, the same height.
    rows = [("readwrite", run, value) for run in range(3) for value in (1.0, 1.0, 4.0)]
    rows += [("sendfile", run, 2.0) for run in range(3) for _ in range(3)]
    svg = run_sequence_svg(pd.DataFrame(rows, columns=["variant", "run", "value"]), VARIANTS, "s")
    readwrite = {y for _, y in _line_points(svg, "sequence-line-0")}
    sendfile = {y for _, y in _line_points(svg, "sequence-line-1")}
    assert len(readwrite) == 1 and readwrite == sendfile


def test_sequence_skips_a_variant_without_values(values):
    svg = run_sequence_svg(values, ["readwrite", "splice", "sendfile"], "s")
    assert "sequence-line-0" in svg and "sequence-line-2" in svg
    assert "sequence-line-1" not in svg


# --- distribution -----------------------------------------------------------------------


def test_distribution_draws_every_value_and_a_box_per_variant(values, charts):
    svg = charts["distribution"]
    for position, variant in enumerate(VARIANTS):
        assert _dots(svg, f"distribution-values-{position}") == (values["variant"] == variant).sum()
        _element(svg, f"distribution-box-{position}")


def test_distribution_keeps_an_outlier_among_the_dots(values):
    with_outlier = pd.concat(
        [values, pd.DataFrame({"variant": ["sendfile"], "run": [9], "value": [5.0], "order": [19]})], ignore_index=True
    )
    svg = distribution_svg(with_outlier, VARIANTS, "s")
    assert _dots(svg, "distribution-values-1") == 11


def test_distribution_skips_a_variant_without_values(values):
    svg = distribution_svg(values, ["readwrite", "splice", "sendfile"], "s")
    assert "distribution-values-1" not in svg and "distribution-box-1" not in svg
    assert _dots(svg, "distribution-values-2") == 10
    assert ">splice<" in svg  # its place on the axis stays, empty
