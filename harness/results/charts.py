"""Every chart the harness draws, as inline <svg> strings: the report's, the compare page's
and the site's claim pages'. The functions take plain data (measured values as DataFrames,
verdicts, dicts of ratios, intervals, labels and verdict words) and return SVG text; no
other module imports matplotlib.

It runs a little over the usual module size because the issue that shaped it asked for one
place for all figure code: six charts share the figure set-up, legends, log-ratio axes and
the SVG post-processing below, and splitting them would split those helpers too.

Rendered with matplotlib's Agg backend (no display needed) and fixed seeds, hash
salts and metadata, so the same numbers always give the same bytes. Text stays
text (svg.fonttype "none"): smaller, selectable, and drawn in the page's font.

Every id in a chart gets a prefix, because several charts share one HTML page
and matplotlib numbers its groups the same way in every figure (figure_1, ...).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness.results.analyse import Thresholds
from harness.results.verdicts import PairVerdict

# Shared with the pages' badges so a verdict has one colour everywhere.
VERDICT_COLOURS = {
    "reproduced": "#1a7f37",
    "reproduced under some conditions": "#4d8a3a",
    "larger effect": "#0969da",  # not green: the claim's size is wrong too
    "smaller effect": "#9a6700",
    "no effect": "#6e7781",
    "reversed": "#cf222e",
    "inconclusive": "#57606a",
    "not applicable": "#8c959f",
}

STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
}

NEUTRAL = "#57606a"  # what has no verdict: claims, captions, legend markers, unknown verdicts
_GRID = "#d0d7de"
_VARIANT_COLOURS = ("#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#57606a")
# Where colour shows the verdict, the marker tells runs (compare) or series (claim pages) apart.
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">")
_RATIO_LABEL = "ratio (> 1: treatment better)"

_JITTER_SEED = 0


# --- one run's values (the report) ----------------------------------------------------------


def run_values_svg(values: pd.DataFrame, variants: list[str], unit: str, *, id_prefix: str = "values") -> str:
    """A strip plot: one dot per run (its mean), faint dots per value, a bar at each variant's mean.

    The mean bar is the mean of run means, the number the ratio is computed from.
    """
    rng = np.random.default_rng(_JITTER_SEED)
    with _figure(id_prefix, (max(4.0, 1.6 * len(variants) + 2), 3.6)) as (fig, ax):
        several_per_run = False
        for position, variant in enumerate(variants):
            colour = _variant_colour(position)
            rows = values[values["variant"] == variant]
            per_run = rows.groupby("run", sort=True)["value"].mean()
            if len(rows) > len(per_run):
                several_per_run = True
                ax.scatter(
                    position + rng.uniform(-0.18, 0.18, len(rows)),
                    rows["value"],
                    s=9,
                    color=colour,
                    alpha=0.25,
                    linewidths=0,
                    zorder=2,
                )
            ax.scatter(
                position + rng.uniform(-0.12, 0.12, len(per_run)),
                per_run,
                s=30,
                color=colour,
                edgecolors="white",
                linewidths=0.6,
                zorder=3,
            )
            if len(per_run):
                mean = per_run.mean()
                ax.hlines(mean, position - 0.3, position + 0.3, color="black", linewidth=2, zorder=4)
                ax.annotate(f"{mean:.4g} {unit}", (position + 0.32, mean), va="center", fontsize=9)
        ax.set_xticks(range(len(variants)), variants)
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(unit)
        caption = "dot: one run's mean; bar: mean of runs"
        if several_per_run:
            caption += "; faint dots: single values"
        return _finish(fig, ax, id_prefix, caption, grid="y")


def run_sequence_svg(values: pd.DataFrame, variants: list[str], unit: str, *, id_prefix: str = "sequence") -> str:
    """Each trial's mean value in the order the trials ran: one line per variant.

    Drift (a host warming up, a neighbour starting) shows as a slope shared by all
    variants, a warm-up effect as a first trial apart from the rest. The x axis is the
    `order` column (the trial's position in the run); without it, the run number.
    Each variant's line is the group `<id_prefix>-line-<position in variants>`.
    """
    by_order = "order" in values.columns and values["order"].notna().any()
    position_column = "order" if by_order else "run"
    with _figure(id_prefix, (7.0, 3.4)) as (fig, ax):
        for position, variant in enumerate(variants):
            rows = values[values["variant"] == variant]
            if rows.empty:
                continue
            trials = rows.groupby("run", sort=True).agg(x=(position_column, "min"), y=("value", "mean"))
            trials = trials.sort_values("x")
            (line,) = ax.plot(
                trials["x"],
                trials["y"],
                marker="o",
                markersize=5,
                linewidth=1.2,
                color=_variant_colour(position),
                label=variant,
            )
            line.set_gid(f"line-{position}")
        if ax.get_legend_handles_labels()[0]:
            _legend_outside(ax)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("trial order in the run" if by_order else "run number (trial order not recorded)")
        ax.set_ylabel(unit)
        return _finish(fig, ax, id_prefix, "one point per trial: the mean of its values", grid="y")


def distribution_svg(values: pd.DataFrame, variants: list[str], unit: str, *, id_prefix: str = "distribution") -> str:
    """Every single value per variant: a box (quartiles, whiskers at 1.5 IQR) over a jittered strip.

    Shows what a mean hides: skew, several modes, outliers. The groups
    `<id_prefix>-box-<position>` and `<id_prefix>-values-<position>` hold each variant's
    box and dots.
    """
    rng = np.random.default_rng(_JITTER_SEED)
    with _figure(id_prefix, (max(4.0, 1.6 * len(variants) + 2), 3.6)) as (fig, ax):
        for position, variant in enumerate(variants):
            own = values.loc[values["variant"] == variant, "value"].to_numpy(dtype=float)
            if own.size == 0:
                continue
            parts = ax.boxplot(
                own,
                positions=[position],
                widths=0.5,
                showfliers=False,  # the strip shows every value, outliers included
                patch_artist=True,
                boxprops={"facecolor": "none", "edgecolor": "#1f2328"},
                medianprops={"color": "#1f2328", "linewidth": 2},
                whiskerprops={"color": "#1f2328"},
                capprops={"color": "#1f2328"},
            )
            for artist in parts["boxes"]:
                artist.set_gid(f"box-{position}")
            dots = ax.scatter(
                position + rng.uniform(-0.2, 0.2, own.size),
                own,
                s=10,
                color=_variant_colour(position),
                alpha=0.45,
                linewidths=0,
                zorder=3,
            )
            dots.set_gid(f"values-{position}")
        ax.set_xticks(range(len(variants)), variants)
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_ylabel(unit)
        caption = "dots: every value; box: quartiles and median; whiskers: 1.5 IQR"
        return _finish(fig, ax, id_prefix, caption, grid="y")


# --- ratios with intervals, coloured by verdict ----------------------------------------------


def ratio_svg(verdicts: list[PairVerdict], thresholds: Thresholds | None = None, *, id_prefix: str = "ratios") -> str:
    """Per pair: measured ratio with its interval, the claim (diamond) and claimed/k (tick).

    The x axis is logarithmic, so a 2x gain and a 2x loss are equally far from 1.
    """
    k = (thresholds or Thresholds()).k
    with _figure(id_prefix, (7.0, 1.1 + 0.7 * max(1, len(verdicts)))) as (fig, ax):
        shown = [1.0]
        for row, verdict in enumerate(verdicts):
            y = len(verdicts) - 1 - row  # first pair on top
            target = verdict.claimed_ratio / k
            ax.plot([target, target], [y - 0.15, y + 0.15], color=NEUTRAL, linewidth=1.2, linestyle="--")
            # Open and larger than the measured dot, so both stay visible when they coincide.
            ax.plot(verdict.claimed_ratio, y, marker="D", markersize=10, color=NEUTRAL, fillstyle="none")
            shown += [verdict.claimed_ratio, target]
            if verdict.measured_ratio is None:
                ax.annotate("no measured ratio", (1.0, y), xytext=(6, 6), textcoords="offset points", fontsize=9)
                continue
            _, low, high = _measured(
                ax,
                verdict.measured_ratio,
                verdict.ci_low,
                verdict.ci_high,
                y,
                along="x",
                verdict=verdict.verdict,
                capsize=4,
            )
            shown += [low, high, verdict.measured_ratio]
            ax.annotate(
                f"{_times(verdict.measured_ratio)} ({verdict.verdict})",
                (verdict.measured_ratio, y),
                xytext=(0, 10),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9,
                color=verdict_colour(verdict.verdict),
            )
        log_ratio_axis(ax, shown, pad=1.35, axis="x")
        ax.set_yticks(range(len(verdicts)), [v.label for v in reversed(verdicts)])
        ax.set_ylim(-0.7, max(1, len(verdicts)) - 0.3)
        ax.set_xlabel(_RATIO_LABEL)
        caption = f"dot: measured, bar: {_percent(verdicts)} interval; diamond: claimed; dashed: claimed/{k:g}"
        return _finish(fig, ax, id_prefix, caption, grid="x")


def comparison_svg(rows: Sequence[Mapping], *, id_prefix: str = "compare") -> str:
    """Runs side by side: per row, each run's measured ratio with its interval, one under the
    other; marker by run (legend "run 1", "run 2", ...), colour by verdict, the claim as an
    open diamond. "" when no run measured anything.

    rows: {"label", "claimed_ratio" (or None), "cells": one per run, None where the run lacks
    the row, else {"measured_ratio", "ci_low", "ci_high" (each or None), "verdict"}}.
    Each point is the group `<id_prefix>-point-<row>-<run>`.
    """
    drawn = [
        (r, c, cell)
        for r, row in enumerate(rows)
        for c, cell in enumerate(row["cells"])
        if cell is not None and cell["measured_ratio"] is not None
    ]
    if not drawn:
        return ""
    n_rows, n_runs = len(rows), len(rows[0]["cells"])
    with _figure(id_prefix, (7.5, 1.2 + 0.28 * n_rows * n_runs + 0.3 * n_rows)) as (fig, ax):
        shown = [1.0]
        ticks = []
        for r, row in enumerate(rows):
            middle = (n_rows - 1 - r) * (n_runs + 1) + (n_runs - 1) / 2
            ticks.append(middle)
            if row["claimed_ratio"]:
                ax.plot(
                    row["claimed_ratio"],
                    middle,
                    marker="D",
                    markersize=9,
                    color=NEUTRAL,
                    fillstyle="none",
                    linestyle="none",
                )
                shown.append(row["claimed_ratio"])
        for r, c, cell in drawn:
            y = (n_rows - 1 - r) * (n_runs + 1) + (n_runs - 1 - c)
            bars, low, high = _measured(ax, *_interval(cell), y, along="x", verdict=cell["verdict"], marker=_marker(c))
            bars.lines[0].set_gid(f"point-{r}-{c}")
            shown += [low, high]
        log_ratio_axis(ax, shown, pad=1.3, axis="x")
        ax.set_yticks(ticks, [row["label"] for row in rows])
        ax.set_ylim(-1, n_rows * (n_runs + 1) - 1)
        ax.set_xlabel(_RATIO_LABEL)
        _marker_legend(ax, [f"run {c + 1}" for c in range(n_runs)])
        caption = "marker: run (legend), colour: verdict, bar: interval; diamond: claimed"
        return _finish(fig, ax, id_prefix, caption, grid="x")


def claim_svg(points: Sequence[Mapping], run_labels: Mapping[int, str], *, id_prefix: str = "claim") -> str:
    """One claim across runs: measured ratio with its interval per run (x: runs by `position`,
    labelled run_labels[position]), colour by verdict, marker by series (pair and condition);
    each claimed ratio as a line, claimed/k dashed (k: the point's, else analyse's default).
    "" when no point has a measured ratio.

    points: {"position", "series", "measured_ratio", "ci_low", "ci_high" (each or None),
    "verdict", "claimed_ratio" (or None), "k" (or None)}.
    Each point is the group `<id_prefix>-point-<index in points>`.
    """
    drawn = [(index, point) for index, point in enumerate(points) if point["measured_ratio"] is not None]
    if not drawn:
        return ""
    series = list(dict.fromkeys(point["series"] for point in points))
    positions = sorted({point["position"] for point in points})
    width = 0.6 / max(1, len(series))
    default_k = Thresholds().k  # for verdict entries that do not record theirs
    with _figure(id_prefix, (max(6.0, 0.7 * len(positions) + 3), 4.0)) as (fig, ax):
        shown = [1.0]
        claims = {(point["claimed_ratio"], point.get("k") or default_k) for point in points if point["claimed_ratio"]}
        for claimed, k in sorted(claims):
            ax.axhline(claimed, color=NEUTRAL, linewidth=1.2)
            ax.axhline(claimed / k, color=NEUTRAL, linewidth=1, linestyle="--")
            shown += [claimed, claimed / k]
        for index, point in drawn:
            s = series.index(point["series"])
            x = point["position"] + (s - (len(series) - 1) / 2) * width
            bars, low, high = _measured(
                ax, *_interval(point), x, along="y", verdict=point["verdict"], marker=_marker(s), linewidth=1.8
            )
            bars.lines[0].set_gid(f"point-{index}")
            shown += [low, high]
        log_ratio_axis(ax, shown, pad=1.3, axis="y")
        tilted = len(positions) > 4
        ax.set_xticks(
            positions,
            [run_labels[position] for position in positions],
            rotation=30 if tilted else 0,
            ha="right" if tilted else "center",
            fontsize=8,
        )
        ax.set_xlim(-0.6, len(positions) - 0.4)
        ax.set_ylabel(_RATIO_LABEL)
        _marker_legend(ax, series)
        caption = "colour: verdict; bar: interval; line: claimed; dashed: claimed/k"
        return _finish(fig, ax, id_prefix, caption, grid="y")


def verdict_colour(verdict: str) -> str:
    return VERDICT_COLOURS.get(verdict, NEUTRAL)


def log_ratio_axis(ax, shown: list[float], pad: float, axis: str = "x") -> None:
    """A logarithmic ratio axis through every value in `shown`, widened by the factor `pad`
    each side, with a line at 1x and ticks labelled 0.5x, 1x, 2x, ..."""
    low, high = min(shown) / pad, max(shown) * pad
    (ax.axvline if axis == "x" else ax.axhline)(1.0, color="black", linewidth=1)
    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"set_{axis}lim")(low, high)
    scale = ax.xaxis if axis == "x" else ax.yaxis
    scale.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    scale.set_minor_formatter(NullFormatter())
    getattr(ax, f"set_{axis}ticks")(sorted({1.0, *_nice_ticks(low, high)}))


# --- the shared shape ------------------------------------------------------------------------


@contextmanager
def _figure(id_prefix: str, size: tuple[float, float]):
    """(fig, ax) in the house style, closed when the block ends. Return _finish(...) from inside
    the block: the SVG must be written while the style (hash salt, text as text) holds."""
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": id_prefix}):
        fig, ax = plt.subplots(figsize=size)
        try:
            yield fig, ax
        finally:
            plt.close(fig)


def _finish(fig, ax, id_prefix: str, caption: str, *, grid: str) -> str:
    """The caption over the plot (left, small, grey), light grid lines along `grid` behind the data; the SVG."""
    ax.set_title(caption, loc="left", fontsize=9, color=NEUTRAL)
    ax.grid(axis=grid, color=_GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return to_svg(fig, id_prefix)


def _interval(point: dict) -> tuple:
    """A point's measured ratio and its interval's ends, in _measured's order."""
    return point["measured_ratio"], point["ci_low"], point["ci_high"]


def _measured(
    ax,
    ratio: float,
    low: float | None,
    high: float | None,
    at: float,
    *,
    along: str,
    verdict: str,
    marker: str = "o",
    capsize: float = 3,
    linewidth: float = 2,
) -> tuple:
    """A measured ratio as a marker in its verdict's colour at `at` on the other axis, its interval a bar
    along `along` ("x" or "y"); a missing end of the interval is the ratio itself.
    Returns the errorbar container and the interval's two ends."""
    low = ratio if low is None else low
    high = ratio if high is None else high
    spread = [[ratio - low], [high - ratio]]
    x, y, error = (ratio, at, {"xerr": spread}) if along == "x" else (at, ratio, {"yerr": spread})
    bars = ax.errorbar(
        x,
        y,
        **error,
        fmt=marker,
        color=verdict_colour(verdict),
        markersize=7,
        capsize=capsize,
        linewidth=linewidth,
        zorder=3,
    )
    return bars, low, high


def _legend_outside(ax, handles: list | None = None) -> None:
    """The legend right of the plot, aligned with its top, without a frame."""
    chosen = {} if handles is None else {"handles": handles}
    ax.legend(**chosen, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)


def _marker_legend(ax, names: Sequence[str]) -> None:
    """One neutral marker per name: a marker's colour is its verdict, which differs point by point."""
    _legend_outside(
        ax,
        [
            Line2D([], [], marker=_marker(i), color=NEUTRAL, linestyle="none", label=name)
            for i, name in enumerate(names)
        ],
    )


def _marker(index: int) -> str:
    return _MARKERS[index % len(_MARKERS)]


def _variant_colour(position: int) -> str:
    return _VARIANT_COLOURS[position % len(_VARIANT_COLOURS)]


def _nice_ticks(low: float, high: float) -> list[float]:
    candidates = [0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000]
    return [tick for tick in candidates if low <= tick <= high]


def _times(ratio: float) -> str:
    """3 significant figures, trailing zeros kept: 2.00x, 0.501x, 150x."""
    return f"{ratio:#.3g}".rstrip(".") + "x"


def _percent(verdicts: list[PairVerdict]) -> str:
    levels = {verdict.confidence for verdict in verdicts}
    return f"{levels.pop() * 100:g}%" if len(levels) == 1 else "confidence"


def to_svg(fig, id_prefix: str) -> str:
    buffer = io.StringIO()
    # No date or creator: the same figure must give the same bytes.
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    svg = text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE; HTML does not want them
    return _prefix_ids(svg, id_prefix)


def _prefix_ids(svg: str, prefix: str) -> str:
    """Rename every id and every reference to it (url(#id), href="#id") to prefix-id."""
    ids = set(re.findall(r'\bid="([^"]+)"', svg))

    def rename(match: re.Match) -> str:
        name = match.group(2)
        return f"{match.group(1)}{prefix}-{name}" if name in ids else match.group(0)

    svg = re.sub(r'(\bid=")([^"]+)', rename, svg)
    return re.sub(r'((?:url\(|href=")#)([^")]+)', rename, svg)
