"""Every ```python block in docs/*.md runs, in order, one namespace per page.

A block preceded by the line ``<!-- no-run -->`` is shown but not run (for
fragments such as a worker that blocks forever). Each page runs in a fresh
temporary working directory, so relative paths like ``sqlite:///pms.db`` work.
A page holding ``<!-- docs: own-process -->`` runs in a fresh interpreter, in
a module of its own (``docs_page``): for process-wide set-up such as
Django's ``settings.configure()``, and for functions a worker imports by name.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"(<!-- no-run -->\s*\n)?```python\n(.*?)```", re.S)
_OWN_PROCESS = "<!-- docs: own-process -->"
_RUNNER = """
import json, pathlib, sys, types
name, blocks = sys.argv[1], json.loads(pathlib.Path(sys.argv[2]).read_text())
page = types.ModuleType("docs_page")
sys.modules["docs_page"] = page
for i, block in enumerate(blocks):
    try:
        exec(compile(block, f"{name}[block {i}]", "exec"), page.__dict__)
    except BaseException:
        print(f"{name} block {i} failed:\\n{block}", file=sys.stderr)
        raise
"""


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
    if _OWN_PROCESS in page.read_text():
        (tmp_path / "_blocks.json").write_text(json.dumps(code))
        done = subprocess.run(
            [sys.executable, "-W", "error", "-c", _RUNNER, page.name, "_blocks.json"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name} block {i} failed: {exc!r}\n{block}") from exc
    os.chdir(tmp_path)
