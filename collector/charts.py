"""Small inline SVG charts for pages and e-mails: no JavaScript, no external files, no plotting library."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

INK, MUTED, ACCENT, WARN, GRID = "#1f2933", "#7b8794", "#2f6fdf", "#d64545", "#e4e7eb"


def _fmt(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:.1f}M"
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    return f"{v:,.0f}"


def bars(labels: Sequence[str], values: Sequence[float], *, title: str, width: int = 560,
         highlight: Sequence[bool] | None = None, unit: str = "") -> str:
    """Horizontal bars, one per label; highlighted bars in the warning colour."""
    row, left, top = 20, 170, 26
    height = top + row * max(len(labels), 1) + 10
    peak = max(values, default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'font-family="Helvetica,Arial,sans-serif" font-size="11">',
             f'<text x="0" y="14" font-size="13" font-weight="bold" fill="{INK}">{escape(title)}</text>']
    span = width - left - 70
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        w = max(1.0, span * v / peak) if v else 0
        colour = WARN if highlight and highlight[i] else ACCENT
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" fill="{INK}">{escape(label[:28])}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colour}" rx="2"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}" fill="{MUTED}">{_fmt(v)}{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def series(labels: Sequence[str], values: Sequence[float], *, title: str, baseline: Sequence[float | None] = (),
           width: int = 640, height: int = 200, marks: Sequence[bool] = ()) -> str:
    """Columns per day with the person's baseline as a dashed line; marked days (alerts) in the warning colour."""
    left, right, top, bottom = 48, 10, 26, 34
    n = max(len(values), 1)
    peak = max([*values, *[b for b in baseline if b is not None], 1])
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
             f'font-family="Helvetica,Arial,sans-serif" font-size="10">',
             f'<text x="0" y="14" font-size="13" font-weight="bold" fill="{INK}">{escape(title)}</text>']
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" fill="{MUTED}">'
                     f'{_fmt(peak * frac)}</text>')
    for i, v in enumerate(values):
        h = plot_h * v / peak
        x = left + i * step
        colour = WARN if i < len(marks) and marks[i] else ACCENT
        parts.append(f'<rect x="{x + step * 0.15:.1f}" y="{top + plot_h - h:.1f}" width="{step * 0.7:.1f}" '
                     f'height="{h:.1f}" fill="{colour}"/>')
        if n <= 16 or i % max(1, n // 10) == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle" '
                         f'fill="{MUTED}">{escape(labels[i])}</text>')
    points = [(left + (i + 0.5) * step, top + plot_h * (1 - b / peak)) for i, b in enumerate(baseline)
              if b is not None]
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{INK}" stroke-width="1.5" '
                     f'stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{width - right}" y="{height - 4}" text-anchor="end" fill="{MUTED}">'
                     f'dashed: own baseline (median of previous active days)</text>')
    parts.append("</svg>")
    return "".join(parts)
