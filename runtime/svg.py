"""Small, dependency-free SVG charts for run reports: line charts, grouped bars, histograms, heat-maps.

Every chart is one standalone `<svg>` element (with its namespace, so it parses as XML and can be
embedded as a `data:` image) that carries a title, axes with ticks and labels, and a legend when it
draws several series. All text is escaped. NaN, infinite and missing values are never drawn: a line
breaks around them and the chart says how many were left out. Coordinates are written with two
decimals, so the same data always gives the same bytes.

Data stays machine-readable for tests and tools: each line is a `<polyline data-series=NAME>`, each
bar a `<rect data-value=V>`, each histogram bar a `<rect data-count=N>`, each heat-map cell a
`<rect data-count=N>` with its count as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import TypeGuard

W, H = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 72, 20, 56, 48
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
FONT = 'font-family="sans-serif" font-size="11"'
MAX_POINTS = 2000  # per line: a long run's report stays small enough to attach to a review


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float | None, float | None]]
    dashed: bool = False


def finite(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v: float) -> str:
    """A short, stable rendering of a number for ticks and labels."""
    if v == 0:
        return "0"
    if abs(v) >= 1e6 or abs(v) < 1e-3:
        return f"{v:.3g}"
    return f"{v:.4g}"


def num_attr(v: float) -> str:
    """An exact, stable attribute value: 8 for 8.0, repr otherwise."""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Ticks at 1, 2, 2.5 or 5 times a power of ten covering [lo, hi] (lo < hi)."""
    raw = (hi - lo) / max(1, count)
    if not (math.isfinite(raw) and raw > 0):
        return [lo, hi]
    mag = 10 ** math.floor(math.log10(raw))
    steps = (1, 2, 5, 10) if integer else (1, 2, 2.5, 5, 10)
    step = next(m * mag for m in steps if m * mag >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, round(step))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _span(values: Sequence[float], pad_zero: bool = False) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if pad_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if lo == hi:
        d = abs(lo) * 0.1 or 1.0
        lo, hi = lo - d, hi + d
    return lo, hi


class _Frame:
    """The plot area, its scales and the common decorations."""

    def __init__(self, title: str, x_label: str, y_label: str, legend: Sequence[tuple[str, str, bool]]) -> None:
        self.title, self.x_label, self.y_label, self.legend = title, x_label, y_label, legend
        self.x0, self.x1, self.y0, self.y1 = 0.0, 1.0, 0.0, 1.0
        self.parts: list[str] = []

    def scale(self, x_ticks: list[float], y_ticks: list[float]) -> None:
        self.x0, self.x1, self.y0, self.y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / ((self.x1 - self.x0) or 1.0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / ((self.y1 - self.y0) or 1.0) * (H - TOP - BOTTOM)

    def axes(self, x_ticks: Sequence[tuple[float, str]], y_ticks: list[float]) -> None:
        base, top = H - BOTTOM, TOP
        for y in y_ticks:
            p = self.py(y)
            self.parts.append(f'<line class="grid" x1="{LEFT}" y1="{p:.2f}" x2="{W - RIGHT}" y2="{p:.2f}" '
                              f'stroke="#e5e5e5"/>')
            self.parts.append(f'<text x="{LEFT - 6}" y="{p + 4:.2f}" text-anchor="end">{escape(fmt(y))}</text>')
        for x, label in x_ticks:
            p = self.px(x)
            self.parts.append(f'<line x1="{p:.2f}" y1="{base}" x2="{p:.2f}" y2="{base + 5}" stroke="#333"/>')
            self.parts.append(f'<text class="xtick" x="{p:.2f}" y="{base + 17}" text-anchor="middle">'
                              f'{escape(label)}</text>')
        self.parts.append(f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{W - RIGHT}" y2="{base}" stroke="#333"/>')
        self.parts.append(f'<line class="axis" x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{base}" stroke="#333"/>')

    def render(self, note: str = "", w: float = W, h: float = H) -> str:
        """The whole chart; `w` and `h` other than the default only for a heat-map that needs room."""
        mid_y = (TOP + h - BOTTOM) / 2
        svg_open = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" '
                    f'viewBox="0 0 {w:.0f} {h:.0f}" role="img" aria-label="{escape(self.title)}" {FONT}>')
        head = [svg_open, f"<title>{escape(self.title)}</title>",
                f'<rect width="{w:.0f}" height="{h:.0f}" fill="#ffffff"/>',
                f'<text class="title" x="{w / 2:.0f}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
                + escape(self.title) + "</text>",
                f'<text class="xlabel" x="{(LEFT + w - RIGHT) / 2:.0f}" y="{h - 8:.0f}" text-anchor="middle">'
                + escape(self.x_label) + "</text>",
                f'<text class="ylabel" x="14" y="{mid_y:.0f}" text-anchor="middle" '
                f'transform="rotate(-90 14 {mid_y:.0f})">' + escape(self.y_label) + "</text>"]
        head += _legend(self.legend)
        if note:
            head.append(f'<text class="note" x="{W - RIGHT}" y="{H - 8}" text-anchor="end" fill="#a00">'
                        f"{escape(note)}</text>")
        return "\n".join(head + self.parts + ["</svg>"])


def _legend(items: Sequence[tuple[str, str, bool]]) -> list[str]:
    if len(items) < 2:
        return []
    out, x = ['<g class="legend">'], float(LEFT)
    for name, color, dashed in items:
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(f'<line x1="{x:.2f}" y1="36" x2="{x + 18:.2f}" y2="36" stroke="{color}" stroke-width="3"{dash}/>')
        out.append(f'<text x="{x + 22:.2f}" y="40">{escape(name)}</text>')
        x += 34 + 6.5 * len(name)
    out.append("</g>")
    return out


def _empty(title: str, x_label: str, y_label: str, why: str) -> str:
    frame = _Frame(title, x_label, y_label, ())
    frame.parts.append(f'<text class="empty" x="{W / 2:.0f}" y="{H / 2:.0f}" text-anchor="middle">'
                       f"{escape(why)}</text>")
    return frame.render()


def _segments(points: Sequence[tuple[float | None, float | None]]) -> tuple[list[list[tuple[float, float]]], int]:
    """Runs of finite points (a gap wherever a value is missing or not finite) and the count left out."""
    segs: list[list[tuple[float, float]]] = [[]]
    dropped = 0
    for x, y in points:
        if x is not None and y is not None and finite(x) and finite(y):
            segs[-1].append((float(x), float(y)))
        else:
            dropped += 1
            if segs[-1]:
                segs.append([])
    return [s for s in segs if s], dropped


def line_chart(title: str, series: Sequence[Series], *, x_label: str, y_label: str,
               hlines: Sequence[tuple[str, float]] = (), integer_x: bool = True) -> str:
    """Lines over x (steps); `hlines` are labelled horizontal references (a gate's threshold).
    A series longer than MAX_POINTS is thinned to every k-th point (and its last), which the chart says."""
    stride = max(1, math.ceil(max((len(s.points) for s in series), default=0) / MAX_POINTS))
    if stride > 1:
        series = [Series(s.name, list(s.points[::stride]) + ([s.points[-1]] if (len(s.points) - 1) % stride else []),
                         s.dashed) for s in series]
    drawn = [(s, *_segments(s.points)) for s in series]
    xs = [p[0] for _, segs, _ in drawn for seg in segs for p in seg]
    ys = [p[1] for _, segs, _ in drawn for seg in segs for p in seg] + [v for _, v in hlines if finite(v)]
    if not xs:
        return _empty(title, x_label, y_label, "no finite values to draw")
    x_ticks = nice_ticks(*_span(xs), count=6, integer=integer_x)
    y_ticks = nice_ticks(*_span(ys))
    colors = [COLORS[i % len(COLORS)] for i in range(len(series))]
    legend = [(s.name, c, s.dashed) for s, c in zip(series, colors, strict=True)]
    legend += [(name, "#888888", True) for name, v in hlines if finite(v)]
    frame = _Frame(title, x_label, y_label, legend)
    frame.scale(x_ticks, y_ticks)
    frame.axes([(t, fmt(t)) for t in x_ticks], y_ticks)
    for name, v in hlines:
        if finite(v):
            p = frame.py(v)
            frame.parts.append(f'<line class="hline" data-name="{escape(name)}" data-value="{num_attr(v)}" x1="{LEFT}" '
                               f'y1="{p:.2f}" x2="{W - RIGHT}" y2="{p:.2f}" stroke="#888888" stroke-dasharray="5 3"/>')
    dropped = 0
    for (s, segs, lost), color in zip(drawn, colors, strict=True):
        dropped += lost
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        for seg in segs:
            pts = " ".join(f"{frame.px(x):.2f},{frame.py(y):.2f}" for x, y in seg)
            frame.parts.append(f'<polyline data-series="{escape(s.name)}" points="{pts}" fill="none" '
                               f'stroke="{color}" stroke-width="2"{dash}/>')
            if len(seg) == 1 or sum(len(g) for g in segs) <= 40:
                frame.parts += [f'<circle class="marker" cx="{frame.px(x):.2f}" cy="{frame.py(y):.2f}" r="2.5" '
                                f'fill="{color}"><title>{escape(f"{s.name}: {fmt(x)}, {fmt(y)}")}</title></circle>'
                                for x, y in seg]
    notes = [f"{dropped} missing or non-finite value(s) not drawn"] if dropped else []
    notes += [f"1 point in {stride} drawn"] if stride > 1 else []
    return frame.render("; ".join(notes))


def bar_chart(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *,
              y_label: str, x_label: str = "") -> str:
    """Grouped bars: one group per entry of `groups`, one bar per series (e.g. before and after)."""
    values = [v for _, vals in series for v in vals if v is not None and finite(v)]
    if not groups or not values:
        return _empty(title, x_label, y_label, "no finite values to draw")
    y_ticks = nice_ticks(*_span([float(v) for v in values], pad_zero=True))
    colors = [COLORS[i % len(COLORS)] for i in range(len(series))]
    frame = _Frame(title, x_label, y_label, [(n, c, False) for (n, _), c in zip(series, colors, strict=True)])
    frame.scale([0.0, float(len(groups))], y_ticks)
    frame.axes([(i + 0.5, g) for i, g in enumerate(groups)], y_ticks)
    band = (W - LEFT - RIGHT) / len(groups)
    width = band * 0.8 / max(1, len(series))
    zero = frame.py(0.0)
    for j, ((name, vals), color) in enumerate(zip(series, colors, strict=True)):
        for i, v in enumerate(vals[:len(groups)]):
            x = LEFT + i * band + band * 0.1 + j * width
            if v is None or not finite(v):
                frame.parts.append(f'<text class="na" x="{x + width / 2:.2f}" y="{zero - 4:.2f}" '
                                   f'text-anchor="middle">n/a</text>')
                continue
            top, bottom = sorted((frame.py(float(v)), zero))
            label = escape(f"{name}, {groups[i]}: {fmt(float(v))}")
            frame.parts.append(f'<rect data-series="{escape(name)}" data-value="{num_attr(float(v))}" x="{x:.2f}" '
                               f'y="{top:.2f}" width="{width:.2f}" height="{bottom - top:.2f}" fill="{color}">'
                               f"<title>{label}</title></rect>")
            frame.parts.append(f'<text x="{x + width / 2:.2f}" y="{top - 3:.2f}" text-anchor="middle" '
                               f'font-size="10">{escape(fmt(float(v)))}</text>')
    return frame.render()


def histogram(title: str, samples: Sequence[float | None], *, x_label: str,
              marks: Sequence[tuple[str, float | None]] = (), bins: int | None = None) -> str:
    """Counts of `samples` in equal-width bins, with labelled vertical marks (percentiles)."""
    xs = [float(v) for v in samples if v is not None and finite(v)]
    if not xs:
        return _empty(title, x_label, "count", "no finite samples to draw")
    n_bins = bins or max(1, min(30, math.ceil(math.sqrt(len(xs)))))
    lo, hi = min(xs), max(xs)
    if lo == hi:
        n_bins = 1
    width = (hi - lo) / n_bins if hi > lo else (abs(lo) * 0.1 or 1.0)
    counts = [0] * n_bins
    for v in xs:
        counts[min(n_bins - 1, int((v - lo) / width)) if hi > lo else 0] += 1
    left = lo if hi > lo else lo - width / 2
    ok_marks = [(name, float(v)) for name, v in marks if v is not None and finite(v)]
    x_ticks = nice_ticks(*_span([left, left + width * n_bins] + [v for _, v in ok_marks]))
    y_ticks = nice_ticks(0.0, float(max(counts)), count=min(5, max(counts)), integer=True)
    legend = [("count", COLORS[0], False)] + [(f"{n} {fmt(v)}", COLORS[(i + 1) % len(COLORS)], True)
                                              for i, (n, v) in enumerate(ok_marks)]
    frame = _Frame(title, x_label, "count", legend)
    frame.scale(x_ticks, y_ticks)
    frame.axes([(t, fmt(t)) for t in x_ticks], y_ticks)
    for i, c in enumerate(counts):
        a, b = frame.px(left + i * width), frame.px(left + (i + 1) * width)
        top = frame.py(float(c))
        rng = f"{fmt(left + i * width)}–{fmt(left + (i + 1) * width)}"
        frame.parts.append(f'<rect class="bin" data-count="{c}" x="{a:.2f}" y="{top:.2f}" width="{b - a:.2f}" '
                           f'height="{H - BOTTOM - top:.2f}" fill="{COLORS[0]}" fill-opacity="0.7" stroke="#fff">'
                           f"<title>{escape(f'{rng}: {c}')}</title></rect>")
    for i, (name, v) in enumerate(ok_marks):
        p = frame.px(v)
        frame.parts.append(f'<line class="mark" data-name="{escape(name)}" data-value="{num_attr(v)}" x1="{p:.2f}" '
                           f'y1="{TOP}" x2="{p:.2f}" y2="{H - BOTTOM}" stroke="{COLORS[(i + 1) % len(COLORS)]}" '
                           f'stroke-width="2" stroke-dasharray="5 3"/>')
    return frame.render()


def heatmap(title: str, labels: Sequence[str], matrix: Sequence[Sequence[float | None]], *,
            x_label: str = "predicted", y_label: str = "true") -> str:
    """A square matrix (a confusion matrix) as shaded cells, each with its count written in."""
    n = len(labels)
    if n == 0 or len(matrix) != n or any(len(r) != n for r in matrix):
        return _empty(title, x_label, y_label, "the matrix does not match its labels")
    names = [s if len(s) <= 16 else s[:15] + "…" for s in labels]
    widest = 6.5 * max(len(s) for s in names)
    size = max(24.0, min(60.0, (W - LEFT - RIGHT - widest - 8) / n))
    rotate = widest > size - 4
    x0 = LEFT + widest + 8
    w = max(float(W), x0 + n * size + RIGHT)
    h = TOP + n * size + (widest * 0.6 + 20 if rotate else 24) + 24
    peak = max((float(v) for r in matrix for v in r if v is not None and finite(v)), default=0.0) or 1.0
    frame = _Frame(title, "", y_label, ())
    for i, row in enumerate(matrix):
        y = TOP + i * size
        frame.parts.append(f'<text class="rowlabel" x="{x0 - 6:.2f}" y="{y + size / 2 + 4:.2f}" '
                           f'text-anchor="end">{escape(names[i])}</text>')
        for j, v in enumerate(row):
            x = x0 + j * size
            fv = float(v) if v is not None and finite(v) else None
            shade = max(0.0, min(1.0, fv / peak)) if fv is not None else 0.0
            fill = f"rgb({round(255 - 255 * shade)},{round(255 - 141 * shade)},{round(255 - 77 * shade)})"
            text = fmt(fv) if fv is not None else "n/a"
            count = f' data-count="{num_attr(fv)}"' if fv is not None else ""
            frame.parts.append(f'<rect class="cell" data-row="{i}" data-col="{j}"{count} x="{x:.2f}" y="{y:.2f}" '
                               f'width="{size:.2f}" height="{size:.2f}" fill="{fill}" stroke="#cccccc">'
                               f"<title>{escape(f'true {labels[i]}, predicted {labels[j]}: {text}')}</title></rect>")
            frame.parts.append(f'<text class="count" x="{x + size / 2:.2f}" y="{y + size / 2 + 4:.2f}" '
                               f'text-anchor="middle" fill="{"#fff" if shade > 0.55 else "#000"}">'
                               f"{escape(text)}</text>")
    base = TOP + n * size
    for j, label in enumerate(names):
        x = x0 + (j + 0.5) * size
        turn = f' transform="rotate(-35 {x:.2f} {base + 14:.2f})"' if rotate else ""
        frame.parts.append(f'<text class="collabel" x="{x:.2f}" y="{base + 14:.2f}" '
                           f'text-anchor="{"end" if rotate else "middle"}"{turn}>{escape(label)}</text>')
    frame.parts.append(f'<text class="xlabel" x="{x0 + n * size / 2:.2f}" y="{h - 8:.2f}" text-anchor="middle">'
                       f"{escape(x_label)}</text>")
    return frame.render(w=w, h=h)
