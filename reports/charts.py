"""The report's pictures, as SVG made here (no plotting library): outcomes per area and
target as stacked bars, and the coherency staleness per scenario and cache mode as grouped
bars (how long each side went on seeing the old state)."""

from __future__ import annotations

import re
from collections import Counter
from html import escape

from reports.matrices import Table
from reports.outcomes import OUTCOMES, Outcome

COLOURS = {"passed": "#5cb85c", "failed (required)": "#d9534f", "failed (optional)": "#f0ad4e",
           "not applicable": "#bbbbbb", "known deviation": "#5bc0de", "harness error": "#9b59b6"}
MODE_COLOURS = ("#337ab7", "#5cb85c", "#f0ad4e", "#d9534f", "#9b59b6", "#5bc0de", "#777777", "#e83e8c")
ROW, BAR, LABEL, WIDTH = 26, 18, 230, 420  # pixels
_MS = re.compile(r"(\d+(?:\.\d+)?) ms")


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="12"><title>{escape(title)}</title>'
            f'<text x="4" y="16" font-size="14" font-weight="bold">{escape(title)}</text>'
            f'{"".join(body)}</svg>\n')


def _legend(names: list[str], colours: list[str], y: int) -> list[str]:
    parts, x = [], 4
    for name, colour in zip(names, colours, strict=True):
        parts.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{x + 16}" y="{y + 11}">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    return parts


def outcomes_by_area(outcomes: list[Outcome]) -> str:
    """One stacked bar per (target, area): how many cases came to each outcome."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for outcome in outcomes:
        counts.setdefault((outcome.target or "?", outcome.area or "other"), Counter())[outcome.outcome] += 1
    rows = sorted(counts)
    body = _legend(list(OUTCOMES), [COLOURS[o] for o in OUTCOMES], 26)
    most = max((sum(c.values()) for c in counts.values()), default=1)
    for i, key in enumerate(rows):
        y, x = 48 + i * ROW, float(LABEL)
        body.append(f'<text x="4" y="{y + 13}">{escape(key[1])} · {escape(key[0])}</text>')
        for name in OUTCOMES:
            n = counts[key][name]
            if n:
                w = max(1.0, WIDTH * n / most)
                body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR}" '
                            f'fill="{COLOURS[name]}"><title>{escape(name)}: {n}</title></rect>')
                x += w
        body.append(f'<text x="{x + 4:.1f}" y="{y + 13}">{sum(counts[key].values())}</text>')
    return _svg(LABEL + WIDTH + 60, 60 + len(rows) * ROW, body, "Outcomes per area and target")


def staleness_ms(text: str) -> float:
    """How long a coherency cell says the old state was seen: 0 at once, N for "after N ms"
    and "stale for > N ms"."""
    found = _MS.search(text)
    return float(found.group(1)) if found else 0.0


def coherency_staleness(table: Table) -> str:
    """Per scenario, a bar per cache mode: milliseconds the change took to show (hatched when it
    had not shown when the rule stopped looking)."""
    modes = sorted({mode for cells in table.values() for mode in cells})
    rows = sorted(table)
    seen = [staleness_ms(c.text) for cells in table.values() for c in cells.values()]
    longest = max(seen, default=0.0) or 1.0
    colours = [MODE_COLOURS[i % len(MODE_COLOURS)] for i in range(len(modes))]
    body = _legend(modes, colours, 26)
    body.append('<defs><pattern id="open" width="6" height="6" patternUnits="userSpaceOnUse" '
                'patternTransform="rotate(45)"><rect width="3" height="6" fill="#000" opacity=".35"/>'
                '</pattern></defs>')
    height = BAR // 2 + 2
    y = 48
    for row in rows:
        body.append(f'<text x="4" y="{y + 12}">{escape(row[:30])}</text>')
        for mode, colour in zip(modes, colours, strict=True):
            cell = table[row].get(mode)
            if cell is not None and cell.status != "skipped":
                ms = staleness_ms(cell.text)
                w = max(1.0, WIDTH * ms / longest)
                body.append(f'<rect x="{LABEL}" y="{y}" width="{w:.1f}" height="{height}" fill="{colour}">'
                            f'<title>{escape(mode)}: {escape(cell.text)}</title></rect>')
                if cell.text.startswith("stale"):
                    body.append(f'<rect x="{LABEL}" y="{y}" width="{w:.1f}" height="{height}" '
                                'fill="url(#open)"/>')
                body.append(f'<text x="{LABEL + w + 4:.1f}" y="{y + height - 1}" font-size="10">'
                            f'{escape(cell.text[:40])}</text>')
            y += height + 1
        y += 8
    title = f"Coherency: staleness per scenario and cache mode (ms, up to {longest:.0f})"
    return _svg(LABEL + WIDTH + 200, y + 10, body, title)
