"""Small SVG charts drawn on the server, so pages need no chart script.

Each function returns the markup of one ``<svg>`` element as a string, with
every text value escaped. The caller marks it safe to insert into a page.
Charts carry a ``<title>`` and ``role="img"`` for screen readers, and every
page that shows one also shows its numbers as a table.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 720
HEIGHT = 260
# Space around the plot for the axis labels, in SVG units.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 16, 16, 40
LINE_COLOUR = "#1f5fbf"
BAND_COLOUR = "#1f5fbf"
BAD_COLOUR = "#b3261e"
GRID_COLOUR = "#d9dee4"
# Period labels such as 2026-09-14 need about 80 units each.
MAX_X_LABELS = 8


@dataclass(frozen=True)
class Point:
    """One period of a series: its value and its 95% interval, when known."""

    label: str
    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0


@dataclass(frozen=True)
class Bar:
    label: str
    value: float


def nice_ticks(low: float, high: float, *, count: int = 5) -> list[float]:
    """Return round tick values that cover ``low``..``high``."""
    if high <= low:
        high = low + 1
    raw_step = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(
        factor * magnitude
        for factor in (1, 2, 2.5, 5, 10)
        if factor * magnitude >= raw_step
    )
    ticks = [math.floor(low / step) * step]
    while ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _format(value: float) -> str:
    return f"{value:g}"


def _svg_open(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        "<style>text{font:12px system-ui,sans-serif;fill:#5b6672}</style>",
    ]


def _runs(points: Sequence[Point], attribute: str) -> list[list[int]]:
    """Split the point indexes into runs without a missing value, so lines
    and bands break at gaps instead of bridging them."""
    runs: list[list[int]] = [[]]
    for index, point in enumerate(points):
        if getattr(point, attribute) is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(index)
    return [run for run in runs if run]


def line_chart(
    *,
    title: str,
    points: Sequence[Point],
    y_range: tuple[float, float] | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """Draw a line of ``points`` over a shaded band from ``low`` to ``high``.

    ``y_range`` clamps the automatic axis to the metric's possible values,
    such as -100..100 for NPS. Each dot has a tooltip with the value, the
    interval and n.
    """
    parts = _svg_open(title, width, height)
    values = [
        bound
        for point in points
        for bound in (point.value, point.low, point.high)
        if bound is not None
    ]
    if not values:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>'
        )
        return "".join(parts)
    low, high = min(values), max(values)
    padding = (high - low) * 0.1 or 1
    low, high = low - padding, high + padding
    if y_range is not None:
        low, high = max(low, y_range[0]), min(high, y_range[1])
    ticks = nice_ticks(low, high)
    low, high = min(low, ticks[0]), max(high, ticks[-1])

    plot_width = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = height - MARGIN_TOP - MARGIN_BOTTOM

    def x_of(index: int) -> float:
        if len(points) == 1:
            return MARGIN_LEFT + plot_width / 2
        return MARGIN_LEFT + plot_width * index / (len(points) - 1)

    def y_of(value: float) -> float:
        return MARGIN_TOP + plot_height * (high - value) / (high - low)

    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="{GRID_COLOUR}"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_format(tick)}</text>'
        )
    label_every = max(1, math.ceil(len(points) / MAX_X_LABELS))
    for index, point in enumerate(points):
        if index % label_every == 0:
            parts.append(
                f'<text x="{x_of(index):.1f}" y="{height - MARGIN_BOTTOM + 18}" '
                f'text-anchor="middle">{escape(point.label)}</text>'
            )

    for run in _runs(points, "low"):
        upper = [f"{x_of(i):.1f},{y_of(points[i].high):.1f}" for i in run]
        lower = [f"{x_of(i):.1f},{y_of(points[i].low):.1f}" for i in reversed(run)]
        parts.append(
            f'<polygon class="band" points="{" ".join(upper + lower)}" '
            f'fill="{BAND_COLOUR}" fill-opacity="0.15" stroke="none"/>'
        )
    for run in _runs(points, "value"):
        path = " ".join(f"{x_of(i):.1f},{y_of(points[i].value):.1f}" for i in run)
        parts.append(
            f'<polyline class="line" points="{path}" fill="none" '
            f'stroke="{LINE_COLOUR}" stroke-width="2"/>'
        )
    for index, point in enumerate(points):
        if point.value is None:
            continue
        interval = ""
        if point.low is not None and point.high is not None:
            interval = f" ({_format(point.low)} to {_format(point.high)})"
        tooltip = f"{point.label}: {_format(point.value)}{interval}, n = {point.n}"
        parts.append(
            f'<circle cx="{x_of(index):.1f}" cy="{y_of(point.value):.1f}" r="3.5" '
            f'fill="{LINE_COLOUR}"><title>{escape(tooltip)}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    *, title: str, bars: Sequence[Bar], width: int = WIDTH, row_height: int = 26
) -> str:
    """Draw horizontal bars from a zero line, with negative values to the left in red."""
    label_width = 180
    height = max(row_height * len(bars), row_height) + 24
    parts = _svg_open(title, width, height)
    if not bars:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>'
        )
        return "".join(parts)
    largest = max(abs(bar.value) for bar in bars) or 1
    has_negative = any(bar.value < 0 for bar in bars)
    has_positive = any(bar.value > 0 for bar in bars)
    plot_left, plot_right = label_width, width - 60
    if has_negative and has_positive:
        zero = (plot_left + plot_right) / 2
        scale = (plot_right - plot_left) / 2 / largest
    elif has_negative:
        zero, scale = plot_right, (plot_right - plot_left) / largest
    else:
        zero, scale = plot_left, (plot_right - plot_left) / largest
    for index, bar in enumerate(bars):
        y = 8 + index * row_height
        length = abs(bar.value) * scale
        x = zero - length if bar.value < 0 else zero
        colour = BAD_COLOUR if bar.value < 0 else LINE_COLOUR
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{escape(bar.label)}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{max(length, 1):.1f}" height="{row_height - 8}" '
            f'fill="{colour}"><title>{escape(bar.label)}: {_format(bar.value)}</title></rect>'
            f'<text x="{max(x + length, zero) + 6:.1f}" y="{y + 15}">{_format(bar.value)}</text>'
        )
    parts.append(
        f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="4" y2="{height - 12}" stroke="#5b6672"/>'
    )
    parts.append("</svg>")
    return "".join(parts)
