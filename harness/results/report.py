"""Run results -> one self-contained HTML page; the one Jinja environment every page uses.

Jinja with autoescape on: claim text and host metadata come from files a user
wrote or a host reported, so they are escaped; only the charts, which our own
code drew, are inserted as markup. StrictUndefined turns a missing context key
into an error instead of a silently empty cell. The report, the compare page and
the site's pages all render through environment(), with the filters below.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, UndefinedError

from harness.results.charts import VERDICT_COLOURS

TEMPLATE = "report.html.j2"
MISSING = "–"

SUMMARY_COLUMNS = ("n", "runs", "mean", "median", "stdev", "min", "max", "cv", "run_cv")
GATE_KEYS = ("variant", "run", "gate", "value", "limit", "passed", "detail")


def environment(templates_dir: Path) -> Environment:
    """The Jinja environment of every page (report, compare, site): templates from
    `templates_dir`, autoescape on, StrictUndefined, the number and text filters below,
    and the verdict colours as the global `verdict_colours`."""
    jinja = Environment(
        loader=FileSystemLoader(templates_dir),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    jinja.filters.update(sig4=sig4, ratio=ratio, plus_minus=plus_minus, percent=percent, quantity=quantity,
                         pvalue=pvalue, when=when, css=css_class)
    jinja.globals["verdict_colours"] = VERDICT_COLOURS
    return jinja


def render_report(context: dict, templates_dir: Path) -> str:
    """Render report.html.j2 from `templates_dir` with `context` (see the template for the keys)."""
    for key in ("summary", "variants", "gates"):  # read here, not in the template; fail the same way
        if key not in context:
            raise UndefinedError(f"{key!r} is undefined")
    page_context = {
        **context,
        # The template should not need to know pandas.
        "summary_rows": _summary_rows(context["summary"], context["variants"]),
        "gate_rows": _gate_rows(context["gates"]),
        "failed_gates": [gate for gate in context["gates"] if not gate["passed"]],
    }
    return environment(templates_dir).get_template(TEMPLATE).render(page_context)


def sig4(value) -> str:
    """4 significant figures without scientific notation for everyday magnitudes: 0.01235, 1.235, 12350."""
    if _missing(value):
        return MISSING
    value = float(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if not -5 <= magnitude <= 6:
        return f"{value:.4g}"
    rounded = round(value, 3 - magnitude)
    # Rounding can carry into the next power of ten (9.9996 -> 10.00); count digits again.
    magnitude = math.floor(math.log10(abs(rounded)))
    return f"{rounded:.{max(0, 3 - magnitude)}f}"


def ratio(value) -> str:
    """3 significant figures, trailing zeros kept: 2.13x, 2.00x, 0.501x, 150x."""
    if _missing(value):
        return MISSING
    return f"{float(value):#.3g}".rstrip(".") + "x"


def plus_minus(value) -> str:
    """A relative half-width as a percentage: 0.0312 -> ±3.1%, 0.25 -> ±25%."""
    if _missing(value):
        return MISSING
    return "±" + percent(value)


def percent(value) -> str:
    """A fraction as a percentage, 2 significant figures: 0.0312 -> 3.1%, 0.25 -> 25%, 0 -> 0%."""
    if _missing(value):
        return MISSING
    shown = float(f"{float(value) * 100:.2g}")
    return f"{shown:g}%"


def quantity(value) -> str:
    """A gate's value or limit: numbers as sig4, booleans as yes/no, text as it is."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    return sig4(value)


def pvalue(value) -> str:
    """A p-value to 3 decimals; "< 0.001" below that."""
    if value is None:
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def when(started: str) -> str:
    """An ISO time as the pages show it: "2026-11-26T02:07:55+00:00" -> "2026-11-26 02:07:55 UTC"."""
    if not started:
        return MISSING
    return started.replace("T", " ", 1).replace("+00:00", " UTC")


def css_class(verdict) -> str:
    """A verdict as a CSS class name: "not reproduced" -> "not-reproduced"."""
    return str(verdict).replace(" ", "-")


def _missing(value) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        raise TypeError(f"expected a number, got {value!r}") from None


def _summary_rows(summary: pd.DataFrame, variants: list[dict]) -> list[dict]:
    """One row per variant: measured ones in summary order, then any that have no values."""
    descriptions = {variant["name"]: variant["description"] for variant in variants}
    # to_dict keeps each column's type; iterrows would turn the counts into floats.
    measured = summary.loc[:, list(SUMMARY_COLUMNS)].to_dict(orient="index")
    rows = [{"variant": name, "description": descriptions.get(name, ""), **stats} for name, stats in measured.items()]
    not_measured = {"n": 0, "runs": 0} | {column: None for column in SUMMARY_COLUMNS[2:]}
    rows += [
        {"variant": name, "description": description, **not_measured}
        for name, description in descriptions.items()
        if name not in measured
    ]
    return rows


def _gate_rows(gates: list[dict]) -> list[dict]:
    """One row per gate, in order of first appearance: its limit(s) and how many trials passed and failed."""
    rows: dict[str, dict] = {}
    for index, gate in enumerate(gates):
        lacking = [key for key in GATE_KEYS if key not in gate]
        if lacking:
            raise UndefinedError(f"gates[{index}] lacks {', '.join(map(repr, lacking))}")
        row = rows.setdefault(gate["gate"], {"gate": gate["gate"], "limits": [], "passed": 0, "failed": 0})
        row["passed" if gate["passed"] else "failed"] += 1
        limit = quantity(gate["limit"])
        if limit not in row["limits"]:
            row["limits"].append(limit)
    return list(rows.values())
