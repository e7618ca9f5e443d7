"""A small server-side SVG bar chart of deliveries per hour (no JavaScript, no CDN)."""

from __future__ import annotations

from datetime import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT, PAD = 720, 140, 20
DELIVERED, FAILED = "#2e7d32", "#c62828"


def hourly_svg(rows: list[tuple[datetime, int, int]]) -> SafeString:
    """Stacked bars: delivered (green) under failed (red), one bar per hour."""
    peak = max([d + f for _, d, f in rows] + [1])
    slot = (WIDTH - 2 * PAD) / max(len(rows), 1)
    usable = HEIGHT - 2 * PAD
    bars = []
    for i, (hour, delivered, failed) in enumerate(rows):
        x = PAD + i * slot + 1
        h_ok = usable * delivered / peak
        h_bad = usable * failed / peak
        title = f"{hour:%H}:00 UTC: {delivered} delivered, {failed} failed"
        for y, height, colour in (
            (HEIGHT - PAD - h_ok, h_ok, DELIVERED),
            (HEIGHT - PAD - h_ok - h_bad, h_bad, FAILED),
        ):
            bars.append((f"{x:.1f}", f"{y:.1f}", f"{slot - 2:.1f}", f"{height:.1f}", colour, title))
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
        bars,
    )
    first = rows[0][0].strftime("%H:00") if rows else ""
    return format_html(
        '<svg class="supalytics-chart" role="img" viewBox="0 0 {w} {h}" width="{w}" '
        'height="{h}" aria-label="Events delivered and failed per hour, last {n} hours">'
        '<text x="{p}" y="12" font-size="11">peak {peak}/h</text>{rects}'
        '<text x="{p}" y="{ty}" font-size="10">{first}</text>'
        '<text x="{tx}" y="{ty}" font-size="10" text-anchor="end">now</text></svg>',
        w=WIDTH,
        h=HEIGHT,
        n=len(rows),
        p=PAD,
        peak=peak,
        rects=rects,
        first=first,
        ty=HEIGHT - 4,
        tx=WIDTH - PAD,
    )
