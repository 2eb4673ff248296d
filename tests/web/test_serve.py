"""``pmsq serve``: a real server process, its defaults, and what it says when it cannot run."""

from __future__ import annotations

import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import pmsq
from pmsq.cli import main
from tests.web._serve import serve


def _get(url: str, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post(url: str, body: str, **headers: str) -> int:
    request = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"content-type": "application/x-www-form-urlencoded", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "pms.db")
    with pmsq.connect(path) as broker:
        broker.declare_queue("email", max_attempts=1)
        q = broker.queue("email")
        q.put({"n": 1})
        with q.get(timeout=1.0) as d:
            d.dead_letter("smtp refused")
    return path


def test_serve_listens_on_loopback_and_takes_the_token_from_the_environment(db: str) -> None:
    with serve(db, token="env-token-123") as served:
        assert served.url.startswith("http://127.0.0.1:")
        status, body = _get(served.url + "/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        form = "queue=email&all=1"
        assert _post(served.url + "/actions/redrive", form) == 401
        assert _post(served.url + "/actions/redrive", form, authorization="Bearer nope-nope") == 401
        with pmsq.connect(db) as broker:
            assert len(broker.dead_letters("email").list()) == 1
        ok = _post(served.url + "/actions/redrive", form, authorization="Bearer env-token-123")
        assert ok == 200
        with pmsq.connect(db) as broker:
            assert broker.dead_letters("email").list() == []
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0


def test_serve_without_a_token_is_read_only(db: str) -> None:
    with serve(db) as served:
        status, body = _get(served.url + "/queues/email")
        assert status == 200
        assert "smtp refused" in body
        assert _post(served.url + "/actions/purge", "queue=email&all=1") == 403
    with pmsq.connect(db) as broker:
        assert len(broker.dead_letters("email").list()) == 1


def test_serve_without_the_web_extra_says_how_to_install_it(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now fails
    assert main(["serve", db]) == 1
    err = capsys.readouterr().err
    assert "pip install 'pmsq[web]'" in err
    assert "pip install '.[web]'" in err


def test_serve_refuses_a_missing_store_and_a_short_token(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", str(tmp_path / "nope.db")]) == 1
    assert "no store at" in capsys.readouterr().err
    assert main(["serve", db, "--token", "short"]) == 1
    assert "at least 8 characters" in capsys.readouterr().err


def test_serve_says_when_the_port_is_taken(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with serve(db) as served:
        port = served.url.rsplit(":", 1)[1]
        assert main(["serve", db, "--port", port]) == 1
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
