"""Small inline SVG charts, drawn on the server: no JavaScript, no build step.

Each chart is a few dozen ``<rect>``/``<polyline>`` elements sized in a
``viewBox``, so it scales with the page. Only numbers go into the markup;
the one piece of text (the accessible title) is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

__all__ = ["bars", "line", "shared_top"]

_W, _H = 240, 48


def _top(values: Sequence[float]) -> float:
    return max([*values, 0.0]) or 1.0


def bars(
    processed: Sequence[int],
    failed: Sequence[int],
    *,
    title: str,
    width: int = _W,
    top: float | None = None,
) -> Markup:
    """Stacked bars per point: acks (green) under failures (red).

    Args:
        processed: Acks per point, oldest first.
        failed: Failures per point, the same length.
        title: What the chart shows (read by screen readers, shown on hover).
        width: Width of the drawing in viewBox units.
        top: The value of a full-height bar; ``None``: this chart's own
            highest. Charts side by side in a table share one, so a quiet
            queue never looks busy next to a loaded one.

    Returns:
        Safe markup of one ``<svg>`` element.
    """
    n = max(1, len(processed))
    own = _top([p + f for p, f in zip(processed, failed, strict=True)])
    top = own if top is None else max(top, own)
    step = width / n
    parts = []
    for i, (p, f) in enumerate(zip(processed, failed, strict=True)):
        x = i * step
        h_ok = _H * p / top
        h_bad = _H * f / top
        if p:
            parts.append(
                f'<rect class="ok" x="{x:.1f}" y="{_H - h_ok:.1f}" '
                f'width="{max(step - 1, 1):.1f}" height="{h_ok:.1f}"/>'
            )
        if f:
            parts.append(
                f'<rect class="bad" x="{x:.1f}" y="{_H - h_ok - h_bad:.1f}" '
                f'width="{max(step - 1, 1):.1f}" height="{h_bad:.1f}"/>'
            )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {_H}" preserveAspectRatio="none" '
        f'role="img"><title>{escape(title)}</title>'
        f'<line class="axis" x1="0" y1="{_H}" x2="{width}" y2="{_H}"/>{"".join(parts)}</svg>'
    )


def line(values: Sequence[float | None], *, title: str, width: int = _W) -> Markup:
    """A line through the known points (gaps where a point is ``None``).

    Args:
        values: One value per point, oldest first.
        title: What the chart shows.
        width: Width of the drawing in viewBox units.

    Returns:
        Safe markup of one ``<svg>`` element.
    """
    n = max(1, len(values))
    top = _top([v for v in values if v is not None])
    step = width / n
    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        y = _H - (_H - 2) * v / top
        runs[-1].append(f"{i * step + step / 2:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline class="p95" points="{" ".join(r)}"/>'
        if len(r) > 1
        else f'<circle class="p95" cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="1.5"/>'
        for r in runs
        if r
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {_H}" preserveAspectRatio="none" '
        f'role="img"><title>{escape(title)}</title>'
        f'<line class="axis" x1="0" y1="{_H}" x2="{width}" y2="{_H}"/>{lines}</svg>'
    )


def shared_top(series: Sequence[object]) -> float:
    """The highest acks + failures of any point of these lines' series (``Line``-like)."""
    tops = [0.0]
    for line_ in series:
        s = getattr(line_, "series", None)
        if s is not None:
            tops.append(_top([p + f for p, f in zip(s.processed, s.failed, strict=True)]))
    return max(tops) or 1.0
