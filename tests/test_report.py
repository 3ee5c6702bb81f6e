import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from jinja2 import UndefinedError

from harness.analyse import Thresholds, compare_pair, summarise
from harness.charts import ratio_svg, run_values_svg
from harness.report import ratio, render_report, sig4

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@pytest.fixture(scope="module")
def values():
    rng = np.random.default_rng(3)
    rows = [
        (variant, run, mean + rng.normal(0, 0.02))
        for variant, mean in (("readwrite", 2.0), ("sendfile", 1.0))
        for run in range(5)
        for _ in range(2)
    ]
    return pd.DataFrame(rows, columns=["variant", "run", "value"])


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
    return {
        "values": run_values_svg(values, ["readwrite", "sendfile"], "s"),
        "ratios": ratio_svg(verdicts),
    }


@pytest.fixture
def context(values, verdicts, charts):
    return {
        "run_id": "2024-05-01T10-00-00_sendfile",
        "status": "complete",
        "started": "2024-05-01T10:00:00+00:00",
        "finished": "2024-05-01T10:20:00+00:00",
        "claim": {
            "id": "sendfile_3x",
            "statement": "sendfile is <script>alert(1)</script> 3.5x faster",
            "source_file": "papers/zero-copy.pdf",
            "source_section": "Section 4.2",
            "claimed_ratio": 3.5,
            "metric": "seconds per transfer",
            "unit": "s",
            "better": "lower",
        },
        "conditions": {"host": "bench-1", "kernel": "6.1.0 & <patched>", "file size": "256MiB"},
        "variants": [
            {"name": "readwrite", "description": "read() and write() through a buffer"},
            {"name": "sendfile", "description": "sendfile() from the page cache"},
        ],
        "summary": summarise(values),
        "verdicts": verdicts,
        "thresholds": Thresholds(),
        "charts": charts,
        "files": [{"label": "values.csv", "href": "raw/values.csv"}, {"label": "hosts.json", "href": "raw/hosts.json"}],
        "notes": ["Quick run: fewer repetitions than the experiment asks for."],
        "costs": [{"variant": "readwrite", "trials": 5, "server_cpu_s_per_gib": 0.4321, "client_cpu_seconds": 0.25,
                   "harness_cpu_seconds": 0.01, "wall_seconds": 1.5}],
    }


def test_claim_statement_is_escaped(context):
    html = render_report(context, TEMPLATES)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "6.1.0 &amp; &lt;patched&gt;" in html


def test_report_shows_verdict_ratio_interval_rule_and_reason(context, verdicts):
    verdict = verdicts[0]
    html = render_report(context, TEMPLATES)
    assert verdict.verdict == "partially reproduced"
    assert 'class="badge partially-reproduced">partially reproduced<' in html
    assert ratio(verdict.measured_ratio) in html
    assert f"{ratio(verdict.ci_low)} &ndash; {ratio(verdict.ci_high)}" in html
    assert "3.50x" in html
    assert verdict.rule.replace("<", "&lt;").replace(">", "&gt;") in html
    assert verdict.reason in html
    assert "95% interval" in html


def test_both_charts_are_inserted_as_markup(context):
    html = render_report(context, TEMPLATES)
    assert html.count("<svg") == 2
    assert "&lt;svg" not in html
    assert context["charts"]["values"] in html and context["charts"]["ratios"] in html


def test_links_summary_conditions_and_notes(context):
    html = render_report(context, TEMPLATES)
    assert '<a href="raw/values.csv">values.csv</a>' in html
    assert '<a href="raw/hosts.json">hosts.json</a>' in html
    mean = context["summary"].loc["sendfile", "mean"]
    assert re.search(r"<td>sendfile</td>.*?\s*<td[^>]*>10</td><td[^>]*>5</td>\s*<td[^>]*>" + sig4(mean) + "<", html)
    assert "sendfile() from the page cache" in html
    assert "bench-1" in html
    assert "Quick run: fewer repetitions" in html
    assert "k = 1.25" in html and "fewer than 3 runs" in html


def test_a_failed_run_renders_without_verdicts(context):
    context.update(status="failed: server did not start on bench-1", verdicts=[], notes=[])
    html = render_report(context, TEMPLATES)
    assert 'class="status problem">failed: server did not start on bench-1<' in html
    assert "No verdicts" in html
    assert "<h2>Notes</h2>" not in html


def test_a_variant_without_values_still_gets_a_row(context):
    context["variants"] = context["variants"] + [{"name": "splice", "description": "splice() via a pipe"}]
    html = render_report(context, TEMPLATES)
    assert re.search(r"<td>splice</td><td>splice\(\) via a pipe</td>\s*<td[^>]*>0</td>", html)


def test_cpu_costs_table(context):
    html = render_report(context, TEMPLATES)
    costs = html.split("CPU cost per variant", 1)[1].split("</table>", 1)[0]
    assert "readwrite" in costs and "0.4321" in costs


@pytest.mark.parametrize("key", ["notes", "thresholds", "conditions", "summary", "variants", "costs"])
def test_a_missing_key_raises(context, key):
    del context[key]
    with pytest.raises(UndefinedError):
        render_report(context, TEMPLATES)


def test_a_missing_nested_key_raises(context):
    del context["claim"]["source_section"]
    with pytest.raises(UndefinedError, match="source_section"):
        render_report(context, TEMPLATES)


@pytest.mark.parametrize(
    "number, shown",
    [(1.23456, "1.235"), (0.0123456, "0.01235"), (12345.6, "12350"), (9.99961, "10.00"), (2, "2.000"), (0, "0")],
)
def test_sig4(number, shown):
    assert sig4(number) == shown


@pytest.mark.parametrize("missing", [None, float("nan"), np.float64("nan")])
def test_missing_numbers_show_a_dash(missing):
    assert sig4(missing) == "–"
    assert ratio(missing) == "–"


@pytest.mark.parametrize("number, shown", [(2.1349, "2.13x"), (2.0, "2.00x"), (0.50123, "0.501x"), (150.2, "150x")])
def test_ratio(number, shown):
    assert ratio(number) == shown


# --- charts -------------------------------------------------------------------------


def _ids(svg: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', svg))


def test_charts_are_bare_svg_elements(charts):
    for svg in charts.values():
        assert svg.startswith("<svg")
        assert svg.rstrip().endswith("</svg>")
        assert "<?xml" not in svg and "DOCTYPE" not in svg


def test_two_charts_share_no_ids(charts):
    values_ids, ratio_ids = _ids(charts["values"]), _ids(charts["ratios"])
    assert values_ids and ratio_ids
    assert not values_ids & ratio_ids


def test_every_reference_points_into_its_own_chart(charts):
    for svg in charts.values():
        references = set(re.findall(r'(?:url\(|href=")#([^")]+)', svg))
        assert references  # clip paths and markers are referenced
        assert references <= _ids(svg)


def test_charts_are_deterministic(values, verdicts, charts):
    assert run_values_svg(values, ["readwrite", "sendfile"], "s") == charts["values"]
    assert ratio_svg(verdicts) == charts["ratios"]


def test_charts_keep_text_as_text(values, verdicts, charts):
    assert "readwrite" in charts["values"] and "sendfile_vs_readwrite" in charts["ratios"]
    assert "partially reproduced" in charts["ratios"]


def test_ratio_chart_marks_claim_over_k(verdicts):
    default = ratio_svg(verdicts)
    looser = ratio_svg(verdicts, Thresholds(k=2.0))
    assert "claimed/1.25" in default and "claimed/2" in looser


def test_ratio_chart_copes_with_a_pair_without_a_measurement(values):
    not_measured = compare_pair(
        values,
        pair="splice_vs_readwrite",
        baseline="readwrite",
        treatment="splice",
        claimed_ratio=2.0,
        better="lower",
    )
    assert "no measured ratio" in ratio_svg([not_measured])


def test_charts_of_a_run_that_measured_nothing():
    empty = pd.DataFrame({"variant": pd.Series(dtype=str), "run": pd.Series(dtype=int), "value": pd.Series(dtype=float)})
    assert run_values_svg(empty, ["readwrite", "sendfile"], "s").startswith("<svg")
    assert ratio_svg([]).startswith("<svg")
