import re

import numpy as np
import pytest
from jinja2 import UndefinedError

from harness.results.analyse import Thresholds, summarise
from harness.results.report import percent, plus_minus, quantity, ratio, render_report, sig4
from harness.results.verdicts import claim_verdict, compare_pair
from tests.builders import TEMPLATES


def gate(variant, run, name, value, limit, passed, detail):
    return {
        "variant": variant,
        "run": run,
        "gate": name,
        "value": value,
        "limit": limit,
        "passed": passed,
        "detail": detail,
    }


GATES = [
    gate("readwrite", 0, "load generator CPU", 0.41, 0.9, True, "load generator 41% of a core, server 99%"),
    gate("readwrite", 0, "swap", 0, 0, True, "0 pages swapped in or out during the load"),
    gate("sendfile", 3, "load generator CPU", 0.97, 0.9, False, "load generator 97% of a core <b>saturated</b>"),
    gate("sendfile", 3, "swap", 0, 0, True, "0 pages swapped in or out during the load"),
    gate("sendfile", 4, "load generator CPU", 0.95, 0.9, False, "load generator 95% of a core, server 40%"),
]
PYPERF_LINE = (
    "Mean +- std dev: [pyperf/readwrite.json] 2.00 sec +- 0.02 sec -> [pyperf/sendfile.json] "
    "1.00 sec +- 0.02 sec: 2.00x faster"
)


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
        "claim_verdict": claim_verdict(verdicts),
        "softirqs": [
            {
                "variant": "sendfile",
                "host": "h1",
                "total": 100,
                "counts": [30, 70],
                "shares": [0.3, 0.7],
                "cpus": [0, 1],
            }
        ],
        "drift": [],
        "timing": [],
        "sweep": {},
        "thresholds": Thresholds(),
        "charts": charts,
        "files": [{"label": "values.csv", "href": "raw/values.csv"}, {"label": "hosts.json", "href": "raw/hosts.json"}],
        "notes": ["Quick run: fewer repetitions than the experiment asks for."],
        "costs": [
            {
                "variant": "readwrite",
                "trials": 5,
                "server_cpu_s_per_gib": 0.4321,
                "server_cpu_s_per_unit": 0.1,
                "units": 4,
                "errors": 0,
                "client_cpu_seconds": 0.25,
                "harness_cpu_seconds": 0.01,
                "wall_seconds": 1.5,
            }
        ],
        "gates": [dict(row) for row in GATES],
        "pyperf": [{"pair": "sendfile_vs_readwrite", "line": PYPERF_LINE, "note": None}],
        "stopping": {
            "reason": "every pair's 95% interval is within ±5.0% of its ratio",
            "repetitions": 5,
            "target_half_width": 0.05,
            "achieved": {"sendfile_vs_readwrite": verdicts[0].half_width},
        },
    }


def test_claim_statement_is_escaped(context):
    html = render_report(context, TEMPLATES)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "6.1.0 &amp; &lt;patched&gt;" in html


def test_report_shows_verdict_ratio_interval_rule_and_reason(context, verdicts):
    verdict = verdicts[0]
    html = render_report(context, TEMPLATES)
    assert verdict.verdict == "smaller effect"
    assert 'class="badge smaller-effect">smaller effect<' in html
    assert ratio(verdict.measured_ratio) in html
    assert f"{ratio(verdict.ci_low)} &ndash; {ratio(verdict.ci_high)}" in html
    assert "3.50x" in html
    assert verdict.rule.replace("<", "&lt;").replace(">", "&gt;") in html
    assert verdict.reason in html
    assert "95% interval" in html


def test_every_chart_is_inserted_as_markup(context):
    html = render_report(context, TEMPLATES)
    assert html.count("<svg") == 4
    assert "&lt;svg" not in html
    for name in ("values", "ratios", "sequence", "distribution"):
        assert context["charts"][name] in html, name


def test_an_empty_chart_says_there_is_nothing_to_draw(context):
    context["charts"] = {**context["charts"], "sequence": "", "distribution": ""}
    html = render_report(context, TEMPLATES)
    assert html.count("<svg") == 2
    assert html.count("Nothing to draw") == 2


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


@pytest.mark.parametrize(
    "key", ["notes", "thresholds", "conditions", "summary", "variants", "costs", "gates", "pyperf", "stopping"]
)
def test_a_missing_key_raises(context, key):
    del context[key]
    with pytest.raises(UndefinedError):
        render_report(context, TEMPLATES)


def test_a_missing_nested_key_raises(context):
    del context["claim"]["source_section"]
    with pytest.raises(UndefinedError, match="source_section"):
        render_report(context, TEMPLATES)


@pytest.mark.parametrize(
    "key, nested",
    [
        ("charts", "sequence"),
        ("charts", "distribution"),
        ("stopping", "achieved"),
        ("stopping", "target_half_width"),
        ("stopping", "reason"),
        ("stopping", "repetitions"),
    ],
)
def test_a_missing_new_nested_key_raises(context, key, nested):
    context[key] = {name: value for name, value in context[key].items() if name != nested}
    with pytest.raises(UndefinedError, match=nested):
        render_report(context, TEMPLATES)


@pytest.mark.parametrize("key", ["gate", "passed", "detail", "limit"])
def test_a_gate_without_a_key_raises(context, key):
    del context["gates"][2][key]
    with pytest.raises(UndefinedError, match=key):
        render_report(context, TEMPLATES)


@pytest.mark.parametrize("key", ["line", "note"])
def test_a_pyperf_entry_without_a_key_raises(context, key):
    del context["pyperf"][0][key]
    with pytest.raises(UndefinedError, match=key):
        render_report(context, TEMPLATES)


# --- verdict details, gates, pyperf, stopping --------------------------------------------


def _section(html: str, heading: str) -> str:
    return html.split(f"<h2>{heading}</h2>", 1)[1].split("</section>", 1)[0]


def _pair_box(html: str, pair: str) -> str:
    return html.split(f"<h3>{pair}:", 1)[1].split('<div class="pair">', 1)[0].split("</section>", 1)[0]


def test_verdict_shows_its_half_width(context, verdicts):
    box = _pair_box(render_report(context, TEMPLATES), "sendfile_vs_readwrite")
    assert re.search(r"Interval half-width</th><td[^>]*>" + re.escape(plus_minus(verdicts[0].half_width)) + "<", box)
    assert "Runs needed" not in box  # only for a straddling interval


def test_an_undecided_verdict_shows_the_runs_needed(context, values):
    undecided = compare_pair(
        values,
        pair="sendfile_vs_readwrite",
        baseline="readwrite",
        treatment="sendfile",
        claimed_ratio=3.5,
        better="lower",
        thresholds=Thresholds(k=1.75),
    )
    assert undecided.rule == "ci_low < claimed/k <= ci_high" and undecided.runs_needed > 5
    context["verdicts"] = [undecided]
    box = _pair_box(render_report(context, TEMPLATES), "sendfile_vs_readwrite")
    assert re.search(rf"Runs needed to decide</th><td[^>]*>about {undecided.runs_needed} per variant<", box)
    assert f"about {undecided.runs_needed} runs per variant would decide it." in box


def test_pyperf_line_is_shown_under_its_pair_and_escaped(context):
    context["pyperf"] = [
        {
            "pair": "sendfile_vs_readwrite",
            "line": "[a<b>.json] 2.00 sec -> [c.json] 1.00 sec: 2.00x faster",
            "note": None,
        },
        {"pair": "another_pair", "line": "Not significant!", "note": None},
    ]
    html = render_report(context, TEMPLATES)
    box = _pair_box(html, "sendfile_vs_readwrite")
    assert "pyperf compare_to: <code>[a&lt;b&gt;.json] 2.00 sec -&gt; [c.json] 1.00 sec: 2.00x faster</code>" in box
    assert "Not significant!" not in html  # another pair's line stays with that pair
    assert 'class="crosscheck"' not in html


def test_pyperf_note_is_shown_when_pyperf_disagrees(context):
    note = "our 95% interval 1.1x-1.3x excludes 1x but pyperf finds no significant difference <sic>."
    context["pyperf"][0]["note"] = note
    box = _pair_box(render_report(context, TEMPLATES), "sendfile_vs_readwrite")
    assert (
        '<p class="crosscheck">our 95% interval 1.1x-1.3x excludes 1x but pyperf finds no significant '
        "difference &lt;sic&gt;.</p>" in box
    )


def test_gates_are_counted_once_per_gate(context):
    gates = _section(render_report(context, TEMPLATES), "Validity gates")
    summary = gates.split("</table>", 1)[0]
    assert summary.count("<td>load generator CPU</td>") == 1 and summary.count("<td>swap</td>") == 1
    # limit, median, worst, passed, failed
    assert re.search(
        r"<td>load generator CPU</td><td>0.9000</td>\s*<td[^>]*>0.9500</td><td[^>]*>0.9700</td>"
        r"\s*<td[^>]*>1</td>\s*<td[^>]*>2</td>",
        summary,
    )
    assert re.search(
        r"<td>swap</td><td>0</td>\s*<td[^>]*>0</td><td[^>]*>0</td>\s*<td[^>]*>2</td>\s*<td[^>]*>0</td>", summary
    )


def test_failed_gates_are_listed_with_their_detail_escaped(context):
    gates = _section(render_report(context, TEMPLATES), "Validity gates")
    failed = gates.split("<h3>Trials that failed a gate (2: 0 replaced)</h3>", 1)[1]
    assert failed.count("<td>sendfile</td>") == 2
    assert "<td>load generator CPU: load generator 97% of a core &lt;b&gt;saturated&lt;/b&gt;</td>" in failed
    assert "server 40%" in failed
    assert "swapped" not in failed and "readwrite" not in failed  # passed gates are only counted


def test_passed_gates_only(context):
    context["gates"] = [row for row in GATES if row["passed"]]
    gates = _section(render_report(context, TEMPLATES), "Validity gates")
    assert "Every gate passed in every trial." in gates
    assert "Trials that failed a gate" not in gates


def test_no_gates_recorded(context):
    context["gates"] = []
    gates = _section(render_report(context, TEMPLATES), "Validity gates")
    assert "No gates were recorded." in gates
    assert "<table>" not in gates


def test_stopping_reason_target_and_achieved_half_widths(context, verdicts):
    stopping = _section(render_report(context, TEMPLATES), "When the run stopped")
    assert "Stopped after 5 repetitions:\n  every pair&#39;s 95% interval is within ±5.0% of its ratio" in stopping
    assert re.search(r"<td>target</td><td[^>]*>±5%</td>", stopping)
    achieved = plus_minus(verdicts[0].half_width)
    assert re.search(rf"<td>sendfile_vs_readwrite</td><td[^>]*>{re.escape(achieved)}</td>", stopping)


def test_stopping_without_a_target_and_without_a_half_width(context):
    context["stopping"] = {
        "reason": "the run stopped <early>",
        "repetitions": 1,
        "target_half_width": None,
        "achieved": {"sendfile_vs_readwrite": None},
    }
    stopping = _section(render_report(context, TEMPLATES), "When the run stopped")
    assert "Stopped after 1 repetition:\n  the run stopped &lt;early&gt;" in stopping
    assert "<td>target</td>" not in stopping and "No target half-width was set" in stopping
    assert re.search(r"<td>sendfile_vs_readwrite</td><td[^>]*>–</td>", stopping)


def test_summary_shows_cv_and_run_cv(context):
    table = _section(render_report(context, TEMPLATES), "Measurements per variant")
    summary = context["summary"]
    cv, run_cv = percent(summary.loc["sendfile", "cv"]), percent(summary.loc["sendfile", "run_cv"])
    assert cv != run_cv
    assert '<th class="number">CV</th><th class="number">Run CV</th>' in table
    row = table.split("<tr><td>sendfile</td>", 1)[1].split("</tr>", 1)[0]
    assert re.search(rf"<td[^>]*>{re.escape(cv)}</td>\s*<td[^>]*>{re.escape(run_cv)}</td>$", row)


def test_how_verdicts_are_decided_names_the_run_invalid_rule_and_the_margin_source(context):
    context["thresholds"] = Thresholds(margin=0.014390386715, margin_source="A/A noise of readwrite")
    rules = _section(render_report(context, TEMPLATES), "How verdicts are decided")
    assert "margin = 0.0144 (A/A noise of readwrite)" in rules
    items = re.findall(r"<li>(.*?)</li>", rules, flags=re.S)
    assert len(items) == 9
    assert "<code>retry budget exhausted</code>" in items[1] and "fewer than 3 runs" in items[2]
    words = [re.search(r"<strong>(.*?)</strong>", item).group(1) for item in items]
    assert words == [
        "not applicable",
        "inconclusive",
        "inconclusive",
        "larger effect",
        "reproduced",
        "reversed",
        "no effect",
        "smaller effect",
        "inconclusive",
    ]
    assert "n &middot; (h / d)&sup2;" in items[8]
    assert "reproduced under some conditions" in rules  # the claim rule is stated


def test_margin_source_defaults_to_default(context):
    rules = _section(render_report(context, TEMPLATES), "How verdicts are decided")
    assert "margin = 0.05 (default)" in rules


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


@pytest.mark.parametrize(
    "number, shown", [(0.0312, "3.1%"), (0.25, "25%"), (0.001234, "0.12%"), (1.5, "150%"), (12.34, "1200%"), (0, "0%")]
)
def test_percent(number, shown):
    assert percent(number) == shown
    assert plus_minus(number) == "±" + shown


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_missing_percentages_show_a_dash(missing):
    assert percent(missing) == "–" and plus_minus(missing) == "–"


@pytest.mark.parametrize(
    "value, shown",
    [
        (0.97, "0.9700"),
        (np.float64(0.97), "0.9700"),
        (0, "0"),
        ("n/a", "n/a"),
        (True, "yes"),
        (np.False_, "no"),
        (None, "–"),
    ],
)
def test_quantity(value, shown):
    assert quantity(value) == shown


def test_drift_after_restore_is_listed_and_escaped(context):
    context["drift"] = [
        {"host": "h1", "setting": "qdisc veth0", "before": "noqueue", "after": "tbf <rate>", "why": "deleted by hand"}
    ]
    html = render_report(context, TEMPLATES)
    assert "these settings differ from the snapshot" in html
    assert "<code>qdisc veth0</code>" in html and "tbf &lt;rate&gt;" in html


def test_a_clean_restore_says_so(context):
    html = render_report(context, TEMPLATES)
    assert "read back as before after restore" in html


def test_softirq_spread_shows_each_cpus_share(context):
    html = render_report(context, TEMPLATES)
    assert "NET_RX softirqs per CPU" in html
    assert "CPU0 30% · CPU1 70%" in html
