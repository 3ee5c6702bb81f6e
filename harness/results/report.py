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

from harness.results import analyse, charts
from harness.results.charts import VERDICT_COLOURS
from harness.results.verdicts import CLAIM_RULE

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
    jinja.filters.update(
        sig4=sig4,
        ratio=ratio,
        plus_minus=plus_minus,
        percent=percent,
        quantity=quantity,
        pvalue=pvalue,
        when=when,
        css=css_class,
    )
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
        "invalid_trials": _invalid_trials(context["gates"]),
        "claim_rule": CLAIM_RULE,
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
    not_measured = {"n": 0, "runs": 0} | dict.fromkeys(SUMMARY_COLUMNS[2:])
    rows += [
        {"variant": name, "description": description, **not_measured}
        for name, description in descriptions.items()
        if name not in measured
    ]
    return rows


def _gate_rows(gates: list[dict]) -> list[dict]:
    """One row per gate, in order of first appearance: its limit(s), the median and worst
    (largest) value over every trial, and how many trials passed and failed."""
    rows: dict[str, dict] = {}
    for index, gate in enumerate(gates):
        lacking = [key for key in GATE_KEYS if key not in gate]
        if lacking:
            raise UndefinedError(f"gates[{index}] lacks {', '.join(map(repr, lacking))}")
        row = rows.setdefault(
            gate["gate"], {"gate": gate["gate"], "limits": [], "passed": 0, "failed": 0, "values": []}
        )
        row["passed" if gate["passed"] else "failed"] += 1
        if isinstance(gate["value"], (int, float)) and not isinstance(gate["value"], bool):
            row["values"].append(float(gate["value"]))
        limit = quantity(gate["limit"])
        if limit not in row["limits"]:
            row["limits"].append(limit)
    for row in rows.values():
        found = [value for value in row.pop("values") if math.isfinite(value)]
        row["median"] = float(np.median(found)) if found else None
        row["worst"] = max(found) if found else None
    return list(rows.values())


def _invalid_trials(gates: list[dict]) -> list[dict]:
    """One row per trial that failed a gate: which, its status (replaced or excluded), and
    every gate it failed."""
    trials: dict[tuple, dict] = {}
    for gate in gates:
        if gate["passed"]:
            continue
        # A trial is its order in the run; gate rows without it (older runs) are told apart by run.
        key = (gate["variant"], gate.get("condition", ""), gate.get("order", gate["run"]))
        row = trials.setdefault(
            key,
            {
                "variant": gate["variant"],
                "condition": gate.get("condition", ""),
                "run": gate["run"],
                "order": gate.get("order"),
                "status": gate.get("status", ""),
                "failed": [],
            },
        )
        row["failed"].append(gate["detail"] and f"{gate['gate']}: {gate['detail']}")
    return list(trials.values())


# --- the report's context ---------------------------------------------------------------
# Built here from plain data: the run side hands over frames, trials and verdicts; nothing
# in this module knows the experiment file or the plan.


def series(variants: list[str], condition_labels: list[str]) -> list[tuple[str, str, str]]:
    """(label, variant, condition) for every variant under every condition; without a sweep
    (one condition) the label is the variant's name."""
    if len(condition_labels) == 1:
        return [(name, name, condition_labels[0]) for name in variants]
    return [(f"{name} · {condition}", name, condition) for condition in condition_labels for name in variants]


def labelled(frame: pd.DataFrame, swept: bool) -> pd.DataFrame:
    """The frame with its variant column renamed to the series labels; unchanged without a sweep."""
    if not swept:
        return frame
    renamed = frame.copy()
    renamed["variant"] = [
        f"{variant} · {condition}" for variant, condition in zip(frame["variant"], frame["condition"], strict=True)
    ]
    return renamed


def build_context(
    *,
    run_id,
    status,
    started,
    finished,
    claim: dict,
    descriptions: dict[str, str],
    series: list[tuple[str, str, str]],
    values: pd.DataFrame,
    costs: pd.DataFrame,
    trials: list,
    conditions: dict[str, str],
    claim_verdict,
    sweep: dict,
    verdicts: list,
    thresholds,
    gates: list[dict],
    pyperf: list[dict],
    stopping: dict,
    files: list[str],
    notes: list[str],
    drift: list[dict],
    timing: dict | None = None,
) -> dict:
    """Everything report.html.j2 shows. With a sweep, tables and charts show each variant under
    each condition as its own series."""
    swept = len({condition for _, _, condition in series}) > 1
    shown_values, shown_costs = labelled(values, swept), labelled(costs, swept)
    labels = [label for label, _, _ in series]
    drawn = not values.empty
    unit = claim["unit"]
    return {
        "run_id": run_id,
        "status": status,
        "started": started,
        "finished": finished,
        "claim": claim,
        "conditions": conditions,
        "claim_verdict": claim_verdict,
        "sweep": sweep,
        "variants": [{"name": label, "description": descriptions[name]} for label, name, _ in series],
        "summary": analyse.summarise(shown_values),
        "costs": cost_table(shown_costs, labels),
        "softirqs": softirq_spread(trials, series),
        "verdicts": verdicts,
        "thresholds": thresholds,
        "charts": {
            "values": charts.run_values_svg(shown_values, labels, unit) if drawn else "",
            "ratios": charts.ratio_svg(verdicts, thresholds) if drawn else "",
            "sequence": charts.run_sequence_svg(shown_values, labels, unit) if drawn else "",
            "distribution": charts.distribution_svg(shown_values, labels, unit) if drawn else "",
        },
        "gates": gates,
        "pyperf": pyperf,
        "stopping": stopping,
        "files": [{"label": name, "href": name} for name in files],
        "notes": notes,
        "drift": drift,
        "timing": time_table(timing or {}),
    }


def softirq_spread(trials: list, series: list[tuple[str, str, str]]) -> list[dict]:
    """Per series and host: the receive softirqs (NET_RX) each CPU ran over the load windows,
    summed over the trials, and each CPU's share: how evenly the kernel spread the receive work."""
    label_of = {(name, condition): label for label, name, condition in series}
    position = {label: i for i, (label, _, _) in enumerate(series)}
    totals: dict[tuple[str, str], dict[int, float]] = {}
    for trial in trials:
        label = label_of.get((trial.variant, trial.condition), trial.variant)
        for host, changes in trial.host_changes.items():
            per_cpu = totals.setdefault((label, host), {})
            for key, value in changes.items():
                if key.startswith("net_rx_cpu"):
                    cpu = int(key.removeprefix("net_rx_cpu"))
                    per_cpu[cpu] = per_cpu.get(cpu, 0.0) + value
    rows = []
    for (label, host), per_cpu in sorted(totals.items(), key=lambda item: (position.get(item[0][0], 0), item[0][1])):
        total = sum(per_cpu.values())
        cpus = sorted(per_cpu)
        rows.append(
            {
                "variant": label,
                "host": host,
                "total": int(total),
                "counts": [int(per_cpu[cpu]) for cpu in cpus],
                "shares": [per_cpu[cpu] / total if total else None for cpu in cpus],
                "cpus": cpus,
            }
        )
    return rows


def cost_table(costs: pd.DataFrame, labels: list[str]) -> list[dict]:
    """Mean CPU cost per series over its trials."""
    rows = []
    for label in labels:
        own = costs[costs["variant"] == label]
        if own.empty:
            continue
        client = own["client_cpu_seconds"]
        rows.append(
            {
                "variant": label,
                "trials": len(own),
                "server_cpu_s_per_gib": float(own["server_cpu_s_per_gib"].mean()),
                "server_cpu_s_per_unit": float(own["server_cpu_s_per_unit"].mean()),
                "units": int(own["units"].sum()),
                "errors": int(own["errors"].sum()),
                "client_cpu_seconds": float(client.mean()) if client.notna().any() else None,
                "harness_cpu_seconds": float(own["harness_cpu_seconds"].mean()),
                "wall_seconds": float(own["wall_seconds"].mean()),
            }
        )
    return rows


STAGE_NAMES = {
    "start-up": "start-up: experiment, plan, run directory",
    "hosts": "hosts: connect, check, lock, recover, ports",
    "snapshot": "snapshot of host settings (Ansible)",
    "provision": "provisioning: packages, builds, data, sysctls (Ansible)",
    "trials": "trials",
    "restore": "restore of host settings (Ansible)",
    "report": "analysis and report files",
}
TRIAL_PARTS = {
    "load_windows": "load windows (measuring)",
    "set_up": "set-up: config, server start, readiness, counters",
    "tear_down": "tear-down: counters, stopping the server",
    "between": "between trials: gates, records, progress",
}


def time_table(timing: dict) -> list[dict]:
    """Rows (what, seconds, share of the wall time, part of the trials) of the manifest's
    `timing` (harness/run/timing.py); [] for a run written before it was recorded."""
    wall = timing.get("wall_seconds")
    if not wall:
        return []
    rows = []
    for stage, seconds in timing.get("stages", {}).items():
        rows.append({"what": STAGE_NAMES.get(stage, stage), "seconds": seconds, "share": seconds / wall, "part": False})
        if stage == "trials":
            rows += [
                {"what": TRIAL_PARTS[part], "seconds": value, "share": value / wall, "part": True}
                for part, value in timing.get("trials", {}).items()
                if part in TRIAL_PARTS
            ]
    rows.append({"what": "wall time", "seconds": wall, "share": 1.0, "part": False})
    return rows
