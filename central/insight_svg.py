"""Charts of the insight page as inline SVG: pure functions, values in, markup out.

Each chart is ``<svg role="img">`` labelled by its ``<title>`` and ``<desc>``
(a sentence that sums it up), with a ``<title>`` per bar for mouse users.
Colours are Okabe–Ito (told apart also with colour-vision deficiency), bars
have outlines and horizontal bars carry their value, so a chart still reads
in grey print; every value is also in the table the page puts after it.
Every text goes through :func:`markupsafe.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from markupsafe import Markup, escape

#: Okabe–Ito colours: told apart also by people with colour-vision deficiency.
COLOURS: Final = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9")


def _nice(value: float) -> float:
    """The next 1, 2 or 5 × 10ⁿ at or above ``value`` (1 for nothing).

    >>> _nice(0), _nice(7), _nice(13), _nice(230)
    (1, 10.0, 20.0, 500.0)
    """
    if value <= 0:
        return 1
    power: float = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover


def _fmt(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _svg_open(chart_id: str, title: str, desc: str, width: int, height: int) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'aria-labelledby="{chart_id}-t {chart_id}-d" data-testid="chart-{chart_id}">',
            f'<title id="{chart_id}-t">{escape(title)}</title>',
            f'<desc id="{chart_id}-d">{escape(desc)}</desc>']


def vbars(chart_id: str, title: str, desc: str, labels: Sequence[str],
          series: Sequence[tuple[str, Sequence[float]]], *, stacked: bool,
          unit: str = "") -> Markup:
    """A vertical bar chart: one group (or stack) per label, one bar per series."""
    width, height, left, top, bottom = 680, 300, 56, 34, 44
    plot_w, plot_h = width - left - 12, height - top - bottom
    totals = ([sum(s[1][i] for s in series) for i in range(len(labels))] if stacked
              else [max((s[1][i] for s in series), default=0) for i in range(len(labels))])
    top_value = _nice(max(totals, default=0))
    out = _svg_open(chart_id, title, desc, width, height)
    out += _legend([name for name, _ in series], left, 8)
    out += _y_axis(left, top, plot_w, plot_h, top_value)
    slot = plot_w / max(1, len(labels))
    bar_w = slot * 0.7 / (1 if stacked else max(1, len(series)))
    for i, label in enumerate(labels):
        x0 = left + i * slot + slot * 0.15
        base = 0.0
        for j, (name, values) in enumerate(series):
            value = values[i]
            h = plot_h * value / top_value
            x = x0 if stacked else x0 + j * bar_w
            y = top + plot_h - h - (plot_h * base / top_value if stacked else 0)
            if value:
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                           f'height="{h:.1f}" fill="{COLOURS[j % len(COLOURS)]}" '
                           f'stroke="#16191d" stroke-width="0.5"><title>'
                           f'{escape(label)} · {escape(name)}: {_fmt(value)}{escape(unit)}'
                           f'</title></rect>')
            if stacked:
                base += value
        short = label.split("-")[-1]
        out.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - bottom + 16}" '
                   f'font-size="12" text-anchor="middle" fill="#16191d">{escape(short)}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 -- every text in it went through escape()


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for j, name in enumerate(names):
        out.append(f'<rect x="{x:.1f}" y="{y}" width="12" height="12" '
                   f'fill="{COLOURS[j % len(COLOURS)]}" stroke="#16191d" stroke-width="0.5"/>'
                   f'<text x="{x + 16:.1f}" y="{y + 11}" font-size="13" fill="#16191d">'
                   f'{escape(name)}</text>')
        x += 24 + 7.5 * len(name)
    return out


def _y_axis(left: int, top: int, plot_w: int, plot_h: int, top_value: float) -> list[str]:
    out = []
    for k in range(5):
        value = top_value * k / 4
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="{"#16191d" if k == 0 else "#c3c9d0"}" stroke-width="1"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="12" text-anchor="end" '
                   f'fill="#16191d">{_fmt(value)}</text>')
    return out


def hbars(chart_id: str, title: str, desc: str, labels: Sequence[str],
          values: Sequence[float], *, top_value: float | None = None, unit: str = "") -> Markup:
    """A horizontal bar chart: one bar per label, its value written at its end."""
    width, label_w, row = 680, 200, 26
    height = 12 + row * max(1, len(labels))
    plot_w = width - label_w - 70
    top_value = top_value or _nice(max(values, default=0))
    out = _svg_open(chart_id, title, desc, width, height)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 6 + i * row
        w = plot_w * value / top_value if top_value else 0
        shown = label if len(label) <= 28 else label[:27] + "…"
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" font-size="13" text-anchor="end" '
                   f'fill="#16191d">{escape(shown)}</text>'
                   f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" '
                   f'fill="{COLOURS[0]}" stroke="#16191d" stroke-width="0.5"><title>'
                   f'{escape(label)}: {_fmt(value)}{escape(unit)}</title></rect>'
                   f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" font-size="13" '
                   f'fill="#16191d">{_fmt(value)}{escape(unit)}</text>')
    out.append(f'<line x1="{label_w}" x2="{label_w}" y1="4" y2="{height - 4}" '
               'stroke="#16191d" stroke-width="1"/></svg>')
    return Markup("".join(out))  # noqa: S704 -- every text in it went through escape()
