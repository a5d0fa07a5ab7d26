"""Geometry of the 48-hour chart, so the SVG template only loops (no JavaScript, no library)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.support.queries import STATUS_ORDER, Hour

WIDTH = 720
PLOT_TOP = 8
PLOT_HEIGHT = 110
ERROR_TOP = PLOT_TOP + PLOT_HEIGHT + 8
ERROR_HEIGHT = 16
LABEL_Y = ERROR_TOP + ERROR_HEIGHT + 14
HEIGHT = LABEL_Y + 4


@dataclass(frozen=True)
class Segment:
    """One status's part of one hour's bar."""

    status: str
    y: float
    height: float
    count: int


@dataclass
class Bar:
    """One hour."""

    x: float
    width: float
    title: str
    segments: list[Segment] = field(default_factory=list)
    errors: int = 0
    error_height: float = 0.0


@dataclass(frozen=True)
class Label:
    """An hour label under the axis."""

    x: float
    text: str


@dataclass
class Chart:
    """What the template draws."""

    bars: list[Bar]
    labels: list[Label]
    peak: int
    peak_errors: int
    total: int
    errors: int
    summary: str
    width: int = WIDTH
    height: int = HEIGHT
    plot_top: int = PLOT_TOP
    plot_bottom: int = PLOT_TOP + PLOT_HEIGHT
    error_top: int = ERROR_TOP
    error_bottom: int = ERROR_TOP + ERROR_HEIGHT
    statuses: tuple[str, ...] = tuple(s.value for s in STATUS_ORDER)


def build(hours: list[Hour]) -> Chart:
    """Stacked bars of events per hour by status, and a strip of failed reconciles per hour."""
    slot = WIDTH / max(len(hours), 1)
    peak = max((h.total for h in hours), default=0)
    peak_errors = max((h.errors for h in hours), default=0)
    bars: list[Bar] = []
    labels: list[Label] = []
    for i, hour in enumerate(hours):
        x = i * slot
        parts = [f"{c} {s.value}" for s, c in hour.counts.items() if c]
        title = f"{hour.start:%a %H:00} UTC: {hour.total} event(s)"
        if parts:
            title += " (" + ", ".join(parts) + ")"
        if hour.errors:
            title += f"; {hour.errors} failed reconcile(s)"
        bar = Bar(x=round(x + 1, 2), width=round(slot - 2, 2), title=title, errors=hour.errors)
        bottom = float(PLOT_TOP + PLOT_HEIGHT)
        for status in STATUS_ORDER:
            count = hour.counts.get(status, 0)
            if not count or not peak:
                continue
            height = PLOT_HEIGHT * count / peak
            bottom -= height
            bar.segments.append(Segment(status.value, round(bottom, 2), round(height, 2), count))
        if peak_errors:
            bar.error_height = round(ERROR_HEIGHT * hour.errors / peak_errors, 2)
        bars.append(bar)
        if hour.start.hour % 6 == 0:
            labels.append(Label(round(x + slot / 2, 2), f"{hour.start:%H}:00"))
    total = sum(h.total for h in hours)
    errors = sum(h.errors for h in hours)
    summary = (
        f"{total} event(s) received in the last {len(hours)} hours, at most {peak} in one "
        f"hour; {errors} failed reconcile attempt(s)"
    )
    return Chart(bars, labels, peak, peak_errors, total, errors, summary)
