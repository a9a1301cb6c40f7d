"""The overview's propagation-latency chart: an inline SVG drawn on the server (no chart
library, no script), one dot per applied batch over the last hour."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT, PAD = 640, 160, 36
LEFT = 64  # room for the y axis' label


@dataclass(frozen=True)
class Chart:
    svg: str
    points: int
    p50_ms: float | None
    max_ms: float | None


def _nice_ceiling(value: float) -> float:
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000):
        if value <= step:
            return float(step)
    return value


def latency_chart(points: list[tuple[float, float]], window: float = 3600.0) -> Chart:
    """``points``: (seconds before now, latency ms). x: the last ``window`` seconds, now at
    the right; y: milliseconds from 0 to a round ceiling above the slowest batch."""
    if not points:
        svg = (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="no batches in the last hour"><text x="{WIDTH / 2}" y="{HEIGHT / 2}" '
            'text-anchor="middle">no changes applied in the last hour</text></svg>'
        )
        return Chart(svg, 0, None, None)
    values = sorted(ms for _, ms in points)
    top = _nice_ceiling(max(values[-1], 1.0))
    plot_w, plot_h = WIDTH - LEFT - PAD, HEIGHT - 2 * PAD
    dots = []
    for ago, ms in points:
        x = LEFT + plot_w * (1 - min(max(ago, 0.0), window) / window)
        y = PAD + plot_h * (1 - min(ms, top) / top)
        dots.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"><title>{ms:.0f} ms</title></circle>'
        )
    p50 = values[len(values) // 2]
    label = escape(f"propagation latency, last hour: {len(points)} batches, p50 {p50:.0f} ms")
    svg = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}">'
        f'<line class="axis" x1="{LEFT}" y1="{PAD + plot_h}" x2="{LEFT + plot_w}" y2="{PAD + plot_h}"/>'
        f'<line class="axis" x1="{LEFT}" y1="{PAD}" x2="{LEFT}" y2="{PAD + plot_h}"/>'
        f'<text x="{LEFT - 6}" y="{PAD + 4}" text-anchor="end">{top:.0f} ms</text>'
        f'<text x="{LEFT - 6}" y="{PAD + plot_h}" text-anchor="end">0</text>'
        f'<text x="{LEFT}" y="{HEIGHT - 8}">-60 min</text>'
        f'<text x="{LEFT + plot_w}" y="{HEIGHT - 8}" text-anchor="end">now</text>'
        + "".join(dots)
        + "</svg>"
    )
    return Chart(svg, len(points), p50, values[-1])
