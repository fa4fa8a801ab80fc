"""A server-rendered SVG chart: delivered / retrying / failed per hour, stacked (no script,
no library, readable by screen readers through its label)."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape

COLOURS = {"delivered": "#2e8b57", "retrying": "#d99a00", "failed": "#c0392b"}
WIDTH, HEIGHT, BAR = 840, 160, 5


def hourly_svg(counts: dict[datetime, dict[str, int]], end: datetime, hours: int,
               label: str) -> str:
    start = end.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    slots = [start + timedelta(hours=i) for i in range(hours)]
    peak = max([sum(counts.get(s, {}).get(k, 0) for k in COLOURS) for s in slots] + [1])
    bar = WIDTH / hours
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + 20}" '
             f'role="img" aria-label="{escape(label)}">']
    for i, slot in enumerate(slots):
        y = float(HEIGHT)
        got = counts.get(slot, {})
        for kind, colour in COLOURS.items():
            n = got.get(kind, 0)
            if not n:
                continue
            h = HEIGHT * n / peak
            y -= h
            parts.append(f'<rect x="{i * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{slot:%Y-%m-%d %H}:00 '
                         f'{kind}: {n}</title></rect>')
        if slot.hour == 0:
            parts.append(f'<text x="{i * bar:.1f}" y="{HEIGHT + 14}" font-size="11" '
                         f'fill="#5b6472">{slot:%m-%d}</text>')
    parts.append(f'<line x1="0" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}" stroke="#d9dee5"/>')
    parts.append("</svg>")
    return "".join(parts)
