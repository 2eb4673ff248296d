"""Every ```python block in docs/*.md runs, in order, one namespace per page.

A block preceded by the line ``<!-- no-run -->`` is shown but not run (for
fragments such as a worker that blocks forever). Each page runs in a fresh
temporary working directory, so relative paths like ``sqlite:///pms.db`` work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"(<!-- no-run -->\s*\n)?```python\n(.*?)```", re.S)


def _pages() -> list[Path]:
    return sorted(DOCS.glob("**/*.md"))


def blocks(page: Path) -> list[str]:
    return [m.group(2) for m in _BLOCK.finditer(page.read_text()) if not m.group(1)]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_doc_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = blocks(page)
    if not code:
        pytest.skip(f"{page.name} has no runnable python examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name} block {i} failed: {exc!r}\n{block}") from exc
    os.chdir(tmp_path)
