"""Charts for the report, as inline <svg> strings.

Rendered with matplotlib's Agg backend (no display needed) and fixed seeds, hash
salts and metadata, so the same numbers always give the same bytes. Text stays
text (svg.fonttype "none"): smaller, selectable, and drawn in the page's font.

Every id in a chart gets a prefix, because several charts share one HTML page
and matplotlib numbers its groups the same way in every figure (figure_1, ...).
"""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from harness.results.analyse import Thresholds  # noqa: E402
from harness.results.verdicts import PairVerdict

# Shared with the report's badges so a verdict has one colour everywhere.
VERDICT_COLOURS = {
    "reproduced": "#1a7f37",
    "partially reproduced": "#9a6700",
    "not reproduced": "#cf222e",
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

_VARIANT_COLOURS = ("#0969da", "#bf3989", "#1a7f37", "#9a6700", "#8250df", "#57606a")

_JITTER_SEED = 0


def run_values_svg(values: pd.DataFrame, variants: list[str], unit: str, *, id_prefix: str = "values") -> str:
    """A strip plot: one dot per run (its mean), faint dots per value, a bar at each variant's mean.

    The mean bar is the mean of run means, the number the ratio is computed from.
    """
    rng = np.random.default_rng(_JITTER_SEED)
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": id_prefix}):
        fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(variants) + 2), 3.6))
        try:
            several_per_run = False
            for position, variant in enumerate(variants):
                colour = _VARIANT_COLOURS[position % len(_VARIANT_COLOURS)]
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
                    ax.annotate(
                        f"{mean:.4g} {unit}",
                        (position + 0.32, mean),
                        va="center",
                        fontsize=9,
                    )
            ax.set_xticks(range(len(variants)), variants)
            ax.set_xlim(-0.6, len(variants) - 0.4)
            ax.set_ylim(bottom=0)
            ax.set_ylabel(unit)
            ax.grid(axis="y", color="#d0d7de", linewidth=0.6)
            ax.set_axisbelow(True)
            caption = "dot: one run's mean; bar: mean of runs"
            if several_per_run:
                caption += "; faint dots: single values"
            ax.set_title(caption, loc="left", fontsize=9, color="#57606a")
            fig.tight_layout()
            return to_svg(fig, id_prefix)
        finally:
            plt.close(fig)


def run_sequence_svg(values: pd.DataFrame, variants: list[str], unit: str, *, id_prefix: str = "sequence") -> str:
    """Each trial's mean value in the order the trials ran: one line per variant.

    Drift (a host warming up, a neighbour starting) shows as a slope shared by all
    variants, a warm-up effect as a first trial apart from the rest. The x axis is the
    `order` column (the trial's position in the run); without it, the run number.
    Each variant's line is the group `<id_prefix>-line-<position in variants>`.
    """
    by_order = "order" in values.columns and values["order"].notna().any()
    position_column = "order" if by_order else "run"
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": id_prefix}):
        fig, ax = plt.subplots(figsize=(7.0, 3.4))
        try:
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
                    color=_VARIANT_COLOURS[position % len(_VARIANT_COLOURS)],
                    label=variant,
                )
                line.set_gid(f"line-{position}")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("trial order in the run" if by_order else "run number (trial order not recorded)")
            ax.set_ylabel(unit)
            ax.grid(axis="y", color="#d0d7de", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.set_title("one point per trial: the mean of its values", loc="left", fontsize=9, color="#57606a")
            fig.tight_layout()
            return to_svg(fig, id_prefix)
        finally:
            plt.close(fig)


def distribution_svg(values: pd.DataFrame, variants: list[str], unit: str, *, id_prefix: str = "distribution") -> str:
    """Every single value per variant: a box (quartiles, whiskers at 1.5 IQR) over a jittered strip.

    Shows what a mean hides: skew, several modes, outliers. The groups
    `<id_prefix>-box-<position>` and `<id_prefix>-values-<position>` hold each variant's
    box and dots.
    """
    rng = np.random.default_rng(_JITTER_SEED)
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": id_prefix}):
        fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(variants) + 2), 3.6))
        try:
            for position, variant in enumerate(variants):
                own = values.loc[values["variant"] == variant, "value"].to_numpy(dtype=float)
                if own.size == 0:
                    continue
                colour = _VARIANT_COLOURS[position % len(_VARIANT_COLOURS)]
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
                    color=colour,
                    alpha=0.45,
                    linewidths=0,
                    zorder=3,
                )
                dots.set_gid(f"values-{position}")
            ax.set_xticks(range(len(variants)), variants)
            ax.set_xlim(-0.6, len(variants) - 0.4)
            ax.set_ylabel(unit)
            ax.grid(axis="y", color="#d0d7de", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.set_title(
                "dots: every value; box: quartiles and median; whiskers: 1.5 IQR",
                loc="left",
                fontsize=9,
                color="#57606a",
            )
            fig.tight_layout()
            return to_svg(fig, id_prefix)
        finally:
            plt.close(fig)


def ratio_svg(
    verdicts: list[PairVerdict], thresholds: Thresholds | None = None, *, id_prefix: str = "ratios"
) -> str:
    """Per pair: measured ratio with its interval, the claim (diamond) and claimed/k (tick).

    The x axis is logarithmic, so a 2x gain and a 2x loss are equally far from 1.
    """
    k = (thresholds or Thresholds()).k
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": id_prefix}):
        fig, ax = plt.subplots(figsize=(7.0, 1.1 + 0.7 * max(1, len(verdicts))))
        try:
            shown = [1.0]
            for row, verdict in enumerate(verdicts):
                y = len(verdicts) - 1 - row  # first pair on top
                colour = VERDICT_COLOURS[verdict.verdict]
                target = verdict.claimed_ratio / k
                ax.plot([target, target], [y - 0.15, y + 0.15], color="#57606a", linewidth=1.2, linestyle="--")
                # Open and larger than the measured dot, so both stay visible when they coincide.
                ax.plot(verdict.claimed_ratio, y, marker="D", markersize=10, color="#57606a", fillstyle="none")
                shown += [verdict.claimed_ratio, target]
                if verdict.measured_ratio is None:
                    ax.annotate("no measured ratio", (1.0, y), xytext=(6, 6), textcoords="offset points", fontsize=9)
                    continue
                low = verdict.ci_low if verdict.ci_low is not None else verdict.measured_ratio
                high = verdict.ci_high if verdict.ci_high is not None else verdict.measured_ratio
                ax.errorbar(
                    verdict.measured_ratio,
                    y,
                    xerr=[[verdict.measured_ratio - low], [high - verdict.measured_ratio]],
                    fmt="o",
                    color=colour,
                    markersize=7,
                    capsize=4,
                    linewidth=2,
                    zorder=3,
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
                    color=colour,
                )
            log_ratio_axis(ax, shown, pad=1.35, axis="x")
            ax.set_yticks(range(len(verdicts)), [v.label for v in reversed(verdicts)])
            ax.set_ylim(-0.7, max(1, len(verdicts)) - 0.3)
            ax.set_xlabel("ratio (> 1: treatment better)")
            ax.set_title(
                f"dot: measured, bar: {_percent(verdicts)} interval; diamond: claimed; dashed: claimed/{k:g}",
                loc="left",
                fontsize=9,
                color="#57606a",
            )
            ax.grid(axis="x", color="#d0d7de", linewidth=0.6)
            ax.set_axisbelow(True)
            fig.tight_layout()
            return to_svg(fig, id_prefix)
        finally:
            plt.close(fig)


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
