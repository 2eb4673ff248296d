"""Aligned plain-text columns for listings (``peek``, ``dlq list``) that fit the terminal.

A listing's first column is an id the operator copies into the next command
(``trace``, ``dlq show``), so it is never cut. Other columns are cut with
``…`` when the terminal is narrow, and the last, free-text column (payload,
reason) follows on the same line when there is room, else on an indented
line of its own. Without a terminal nothing is cut except that free text,
and every message stays on one line, for grep.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["cut", "layout"]

_GAP = "  "
_INDENT = "    "
_MIN_TAIL = 24  # below this the free text moves to its own line
_MIN_CUT = 6  # a cut column keeps at least this many characters


def cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one ``…`` when anything was removed."""
    if width < 1:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def layout(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int | None,
    right: Collection[int] = (),
    shrink: Sequence[int] = (),
    tail_width: int = 10_000,
) -> list[str]:
    """The lines of a listing.

    Args:
        header: Column titles; the last column is the free text.
        rows: One row of cells per item, as long as ``header``.
        width: Terminal columns, or ``None`` without a terminal (no line limit).
        right: Indexes of right-aligned columns.
        shrink: Indexes of columns that may be cut to fit ``width``, the
            first given cut first. The first column is never cut.
        tail_width: Longest free text shown without a terminal.

    Returns:
        The lines, header first; none longer than ``width`` when given, as long
        as the columns that are never cut fit in it.
    """
    fixed = len(header) - 1
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(fixed)]

    def used() -> int:
        return sum(widths) + len(_GAP) * fixed

    if width is not None:
        for i in shrink:
            excess = used() - width
            if excess <= 0:
                break
            widths[i] = max(_MIN_CUT, len(header[i]), widths[i] - excess)
    room = tail_width if width is None else width - used()
    below = width is not None and room < _MIN_TAIL
    lines = []
    for r in [header, *rows]:
        cells = [cut(r[i], widths[i]) for i in range(fixed)]
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        tail = r[fixed]
        if not below:
            lines.append(_GAP.join([*cells, cut(tail, room)]).rstrip())
            continue
        lines.append(_GAP.join(cells).rstrip())
        if tail:
            assert width is not None
            lines.append(_INDENT + cut(tail, width - len(_INDENT)))
    return lines
