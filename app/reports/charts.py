"""The reports as charts: SVG rendered on the server with matplotlib, from the published
(already suppressed) figures only, so a chart never shows what its report withholds.

Text stays text in the SVG (searchable, scalable), ids are stable, and each chart is shown
beside a table of its numbers (the accessible version). Rendering runs in a thread: it is
CPU work.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from typing import Any

from app.reports.aggregates import SERVICES, URGENCIES, Report

# One colour per series, distinguishable with common colour-vision deficiencies (Okabe-Ito),
# each with a hatch too, so no series is told apart by colour alone.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
HATCHES = ("", "//", "..", "xx", "\\\\", "--")
_LOCK = threading.Lock()  # pyplot's state is global; one chart at a time


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot

    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "ruta", "font.size": 11})
    return pyplot.subplots(figsize=(7.5, 3.6), layout="constrained")


def _svg(draw: Callable[[Any], None]) -> str:
    """Run ``draw(axes)`` on a new figure and return it as a ``data:`` URI (an image the
    page's Content-Security-Policy allows, needing no route of its own)."""
    with _LOCK:
        figure, axes = _figure()
        try:
            draw(axes)
            out = io.BytesIO()
            figure.savefig(out, format="svg", metadata={"Date": None})
        finally:
            from matplotlib import pyplot

            pyplot.close(figure)
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode()


def _counts(axis: Any, set_limits: Callable[..., Any], highest: int) -> None:
    """A count axis: whole numbers from zero (a chart whose figures are all suppressed is
    an empty one from 0 to 1, not a line at zero between negative counts)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))
    set_limits(0, max(highest, 1) * 1.1)


def _label(t: Callable[[str], str], code: str) -> str:
    return t(f"code:{code}")


def referrals_chart(report: Report, t: Callable[[str], str]) -> str:
    """Stacked bars per week: the shown referrals of each service (suppressed cells left
    out)."""
    weeks = [row.key for row in report.rows]

    def draw(axes: Any) -> None:
        bottom = [0] * len(weeks)
        for index, service in enumerate(SERVICES):
            heights = [
                sum(int(row.values.get(f"{service}/{u}") or 0) for u in URGENCIES)
                for row in report.rows
            ]
            axes.bar(
                weeks,
                heights,
                bottom=bottom,
                label=_label(t, service),
                color=COLOURS[index],
                hatch=HATCHES[index],
                edgecolor="#333333",
            )
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        axes.set_ylabel(t("Referrals"))
        _counts(axes.yaxis, axes.set_ylim, max(bottom, default=0))
        axes.legend(loc="upper left", fontsize=9)
        axes.tick_params(axis="x", labelrotation=45)

    return _svg(draw)


def acknowledgement_chart(report: Report, t: Callable[[str], str]) -> str:
    rows = [r for r in report.rows if r.values.get("median_hours") is not None]
    names = [r.label or r.key for r in rows]

    def draw(axes: Any) -> None:
        positions = list(range(len(rows)))
        medians = [float(r.values["median_hours"] or 0) for r in rows]
        p90 = [float(r.values["p90_hours"] or 0) for r in rows]
        axes.barh(
            [p + 0.2 for p in positions],
            medians,
            height=0.4,
            label=t("median"),
            color=COLOURS[0],
            edgecolor="#333333",
        )
        axes.barh(
            [p - 0.2 for p in positions],
            p90,
            height=0.4,
            label=t("90th percentile"),
            color=COLOURS[1],
            hatch=HATCHES[1],
            edgecolor="#333333",
        )
        axes.set_yticks(positions, names)
        axes.set_xlabel(t("Hours to acknowledge"))
        axes.legend(loc="lower right", fontsize=9)

    return _svg(draw)


def outcomes_chart(report: Report, t: Callable[[str], str]) -> str:
    weeks = [row.key for row in report.rows]

    def draw(axes: Any) -> None:
        for index, (column, label) in enumerate(
            (("fallback_rate", t("Fallback rate")), ("escalation_rate", t("Escalation rate")))
        ):
            values = [row.values.get(column) for row in report.rows]
            axes.plot(
                weeks,
                [float("nan") if v is None else float(v) * 100 for v in values],
                marker="os"[index],
                label=label,
                color=COLOURS[index],
                linestyle=("-", "--")[index],
            )
        axes.set_ylabel("%")
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left", fontsize=9)
        axes.tick_params(axis="x", labelrotation=45)

    return _svg(draw)


def rules_chart(report: Report, t: Callable[[str], str]) -> str:
    rows = [r for r in report.rows if r.values.get("decisions") is not None][:12]
    rows.reverse()

    def draw(axes: Any) -> None:
        axes.barh(
            [r.key for r in rows],
            [int(r.values["decisions"] or 0) for r in rows],
            color=COLOURS[2],
            edgecolor="#333333",
        )
        axes.set_xlabel(t("Decisions"))
        _counts(
            axes.xaxis,
            axes.set_xlim,
            max((int(r.values["decisions"] or 0) for r in rows), default=0),
        )

    return _svg(draw)


CHARTS = {
    "referrals": referrals_chart,
    "acknowledgement": acknowledgement_chart,
    "outcomes": outcomes_chart,
    "rules": rules_chart,
}
