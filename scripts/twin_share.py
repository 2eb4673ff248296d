"""Share of two source trees' code lines that also stand in the other, word for word or by shape.

Usage: ``python scripts/twin_share.py pmsq/backends/sqlite plugins/pmsq-postgres/pmsq_postgres``

A line counts when it lies in a run of at least ``--min-lines`` (6) code lines
that the other tree holds too. "exact": equal after folding white space;
"shape": equal once names, strings and numbers are replaced. Blank lines,
comments, imports and lone punctuation are passed over (as the
``duplicates`` command does). Issue 14 measured 18-19 % shape and 8-9 %
exact between the SQLite and PostgreSQL backends this way.
"""

from __future__ import annotations

import argparse
import keyword
import re
from collections.abc import Callable
from pathlib import Path

_PUNCT = re.compile(r"[()\[\]{}:,]+")
_STRING = re.compile(r"[rbfu]*\"[^\"]*\"|[rbfu]*'[^']*'")
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")
_NAME = re.compile(r"\b[A-Za-z_]\w*\b")


def code_lines(path: Path) -> list[str]:
    out = []
    for raw in path.read_text().splitlines():
        s = raw.strip()
        if not s or s.startswith(("#", "import ", "from ")) or _PUNCT.fullmatch(s):
            continue
        out.append(re.sub(r"\s+", " ", s.split("  #")[0]))
    return out


def shape(line: str) -> str:
    line = _NUMBER.sub("N", _STRING.sub("S", line))
    return _NAME.sub(lambda m: m.group(0) if keyword.iskeyword(m.group(0)) else "x", line)


def shared(files: list[list[str]], other: list[str], n: int, key: Callable[[str], str]) -> int:
    keys = [key(s) for s in other]
    runs = {tuple(keys[i : i + n]) for i in range(len(keys) - n + 1)}
    total = 0
    for lines in files:
        ks = [key(s) for s in lines]
        hit = [False] * len(ks)
        for i in range(len(ks) - n + 1):
            if tuple(ks[i : i + n]) in runs:
                hit[i : i + n] = [True] * n
        total += sum(hit)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--min-lines", type=int, default=6)
    args = ap.parse_args()
    trees = {d: [code_lines(p) for p in sorted(Path(d).rglob("*.py"))] for d in (args.a, args.b)}
    for me, them in ((args.a, args.b), (args.b, args.a)):
        other = [s for f in trees[them] for s in f]
        total = sum(len(f) for f in trees[me])
        for name, key in (("shape", shape), ("exact", str)):
            n = shared(trees[me], other, args.min_lines, key)
            print(f"{me}: {name} {n}/{total} = {100 * n / total:.1f}%")


if __name__ == "__main__":
    main()
