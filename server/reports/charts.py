"""Charts of the report as inline SVG: drawn here from the figures, so the HTML, and the PDF printed from it, need
no script, no network and no chart library, and what the chart shows is what the tables say.

Pure: numbers in, SVG text out (labels escaped). Rates are fractions 0..1; ``None`` is a gap (no service time).
"""

from __future__ import annotations

from html import escape

W, H = 680, 220
PAD_L, PAD_R, PAD_T, PAD_B = 44, 12, 14, 40
COLOURS = ("#1f5fa8", "#d2691e")


def _y(v: float, lo: float, hi: float) -> float:
    return PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo))


def _floor(values: list[float], threshold: float) -> float:
    """The axis' low end: a round step below the lowest value and the threshold, so small differences show."""
    low = min([*values, threshold]) if values else threshold
    for step in (0.8, 0.5, 0.0):
        if low >= step + 0.02:
            return step
    return 0.0


def _axis(lo: float, hi: float, threshold: float, threshold_label: str) -> list[str]:
    out = []
    n = 5
    for i in range(n + 1):
        v = lo + (hi - lo) * i / n
        y = _y(v, lo, hi)
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd" stroke-width="0.6"/>')
        out.append(f'<text x="{PAD_L - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="9">{v * 100:.0f}%</text>')
    ty = _y(threshold, lo, hi)
    out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#a00" stroke-width="0.8" '
               f'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{W - PAD_R}" y="{ty - 3:.1f}" text-anchor="end" font-size="9" fill="#a00">'
               f'{escape(threshold_label)}</text>')
    return out


def _legend(names: list[str]) -> list[str]:
    out = []
    x = PAD_L
    for i, name in enumerate(names):
        out.append(f'<rect x="{x}" y="{H - 12}" width="10" height="8" fill="{COLOURS[i % 2]}"/>')
        out.append(f'<text x="{x + 14}" y="{H - 5}" font-size="9">{escape(name)}</text>')
        x += 24 + 11 * len(name)
    return out


def line_chart(days: list[str], series: list[tuple[str, list[float | None]]], threshold: float,
               threshold_label: str, title: str) -> str:
    """Daily rates as lines (one per series), the threshold dashed; days on the x axis (every ~10th labelled)."""
    values = [v for _n, vs in series for v in vs if v is not None]
    lo, hi = _floor(values, threshold), 1.0
    n = max(1, len(days))
    step = (W - PAD_L - PAD_R) / max(1, n - 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" '
             f'aria-label="{escape(title)}">', *_axis(lo, hi, threshold, threshold_label)]
    every = max(1, n // 9)
    for i, d in enumerate(days):
        if i % every == 0 or i == n - 1:
            x = PAD_L + i * step
            parts.append(f'<text x="{x:.1f}" y="{H - PAD_B + 12}" text-anchor="middle" font-size="8.5">'
                         f'{escape(d)}</text>')
    for k, (_name, vs) in enumerate(series):
        run: list[str] = []
        runs: list[list[str]] = []
        for i, v in enumerate(vs):
            if v is None:
                if run:
                    runs.append(run)
                run = []
                continue
            run.append(f"{PAD_L + i * step:.1f},{_y(max(lo, v), lo, hi):.1f}")
        if run:
            runs.append(run)
        for r in runs:
            if len(r) == 1:
                x, y = r[0].split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="1.8" fill="{COLOURS[k % 2]}"/>')
            else:
                parts.append(f'<polyline fill="none" stroke="{COLOURS[k % 2]}" stroke-width="1.4" '
                             f'points="{" ".join(r)}"/>')
    parts += _legend([n for n, _v in series])
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(names: list[str], series: list[tuple[str, list[float | None]]], threshold: float,
              threshold_label: str, title: str) -> str:
    """Rates by county as grouped bars, the threshold dashed; a bar below the threshold is drawn in red."""
    values = [v for _n, vs in series for v in vs if v is not None]
    lo, hi = _floor(values, threshold), 1.0
    n = max(1, len(names))
    group = (W - PAD_L - PAD_R) / n
    bw = max(1.0, min(14.0, group * 0.8 / max(1, len(series))))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" '
             f'aria-label="{escape(title)}">', *_axis(lo, hi, threshold, threshold_label)]
    base = _y(lo, lo, hi)
    for i, name in enumerate(names):
        x0 = PAD_L + i * group + (group - bw * len(series)) / 2
        for k, (_s, vs) in enumerate(series):
            v = vs[i]
            if v is None:
                continue
            y = _y(max(lo, v), lo, hi)
            colour = "#c00" if v < threshold else COLOURS[k % 2]
            parts.append(f'<rect x="{x0 + k * bw:.1f}" y="{y:.1f}" width="{bw - 0.6:.1f}" height="{base - y:.1f}" '
                         f'fill="{colour}" fill-opacity="{1 if k == 0 else 0.6}"/>')
        if n <= 40:
            parts.append(f'<text x="{PAD_L + (i + 0.5) * group:.1f}" y="{H - PAD_B + 11}" text-anchor="end" '
                         f'font-size="8" transform="rotate(-35 {PAD_L + (i + 0.5) * group:.1f} {H - PAD_B + 11})">'
                         f'{escape(name)}</text>')
    parts += _legend([n for n, _v in series])
    parts.append("</svg>")
    return "".join(parts)

