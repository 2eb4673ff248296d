"""The dashboard over HTTP (Starlette's test client): pages, actions and who may act."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

import pmsq
import pmsq.web
from pmsq.backends import History
from pmsq.errors import ConfigurationError
from tests.web.conftest import ACME_TOKEN, GLOBEX_TOKEN, TOKEN, dead_ids, kill

HTML = {"accept": "text/html"}
SAME = {"origin": "http://testserver", "sec-fetch-site": "same-origin"}


def client(broker: pmsq.Broker, token: Any = None) -> TestClient:
    return TestClient(pmsq.web.app(broker, token=token), follow_redirects=False)


def login(c: TestClient, token: str) -> str:
    """Log in through the form; the CSRF token of the session's pages."""
    r = c.post("/login", data={"token": token}, headers=SAME)
    assert r.status_code == 303, r.text
    page = c.get("/queues/email", headers=HTML)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, "a logged-in page carries its CSRF token"
    return found.group(1)


def operator_events(broker: pmsq.Broker) -> list[Any]:
    backend = broker.backend
    assert isinstance(backend, History)
    return [e for e in backend.history(message_id="", limit=100) if e.event == "operator"]


# -- reading -----------------------------------------------------------------------------
def test_every_page_renders(store: pmsq.Broker) -> None:
    c = client(store)
    for path in ("/", "/queues/email", "/tenants", "/tenants/acme", "/schedules", "/trace"):
        r = c.get(path, headers=HTML)
        assert r.status_code == 200, (path, r.text[:500])
        assert r.headers["content-type"].startswith("text/html")
        assert "script-src" not in r.headers["content-security-policy"]  # no script at all


def test_the_overview_shows_the_snapshot_figures(store: pmsq.Broker) -> None:
    store.queue("calendar").put({"late": True})
    html = client(store).get("/").text
    snap = store.stats()
    for name in ("email", "calendar"):
        row = re.search(rf'<tr class="[^"]*" data-queue="{name}">(.*?)</tr>', html, re.S)
        assert row is not None
        cells = dict(re.findall(r'data-figure="(\w+)">([^<]*)<', row.group(1)))
        qs = snap.queues[name]
        assert int(cells["ready"]) == qs.ready
        assert int(cells["dead"]) == qs.dead
        assert int(cells["in_flight"]) == qs.in_flight
    # The default rule's alert: any dead letter is critical.
    assert "email: 3 dead letters (alert above 0)" in html


def test_a_queue_page_lists_its_dead_letters_with_their_errors(store: pmsq.Broker) -> None:
    html = client(store).get("/queues/email").text
    for mid in dead_ids(store):
        assert f'data-id="{mid}"' in html
    assert "smtp refused" in html
    assert 'data-figure="dead">3<' in html


def test_an_unknown_queue_is_404(store: pmsq.Broker) -> None:
    assert client(store).get("/queues/nope").status_code == 404
    assert client(store).get("/queues/..%2F..%2Fetc").status_code == 404


def test_metrics_is_what_pmsq_stats_prometheus_prints(
    store: pmsq.Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    from pmsq.cli import main

    served = client(store).get("/metrics")
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/plain; version=0.0.4")
    url = store.backend.path
    store.backend.stats(now=store.clock.time())  # flush this process's outcome counters
    assert main(["stats", url, "--prometheus"]) == 0
    printed = capsys.readouterr().out

    def stable(text: str) -> list[str]:
        # Ages and lags move with the clock between the two reads.
        return [ln for ln in text.splitlines() if "age_seconds" not in ln and "lag" not in ln]

    assert stable(served.text) == stable(printed)
    assert 'pmsq_queue_dead{queue="email",tenant="acme"} 2' in served.text


def test_healthz(store: pmsq.Broker) -> None:
    c = client(store)
    r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    store.close()
    r = c.get("/healthz")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"


def test_healthz_consumers_cannot_say_yes_without_worker_presence(tmp_path: Path) -> None:
    with bare(tmp_path) as store:
        r = client(store).get("/healthz?consumers=1")
        assert r.status_code == 503
        assert r.json()["status"] == "unknown"


def test_healthz_consumers_fails_when_due_messages_have_no_consumer(store: pmsq.Broker) -> None:
    r = client(store).get("/healthz?consumers=1")
    assert r.status_code == 503
    assert "calendar" in r.json()["queues_without_consumers"]


def test_mounted_under_a_prefix_the_links_keep_it(store: pmsq.Broker) -> None:
    outer = Starlette(routes=[Mount("/ops/queues", app=pmsq.web.app(store))])
    c = TestClient(outer)
    html = c.get("/ops/queues/").text
    assert 'href="/ops/queues/queues/email"' in html
    assert c.get("/ops/queues/queues/email").status_code == 200
    assert c.get("/ops/queues/metrics").status_code == 200


def test_app_takes_a_url_and_closes_its_broker(store: pmsq.Broker) -> None:
    url = store.backend.path
    app = pmsq.web.app(url)
    with TestClient(app) as c:
        assert c.get("/queues/email").status_code == 200
        broker = app.state.broker
    with pytest.raises(pmsq.PmsqError):
        broker.queues()


def test_app_refuses_what_is_neither_url_nor_broker() -> None:
    with pytest.raises(ConfigurationError, match=r"URL or a pmsq\.Broker"):
        pmsq.web.app(42)  # type: ignore[arg-type]


# -- read-only -----------------------------------------------------------------------------
def test_without_a_token_actions_are_hidden_and_refused(store: pmsq.Broker) -> None:
    c = client(store)
    html = c.get("/queues/email").text
    assert "/actions/" not in html
    before = dead_ids(store)
    for verb in ("redrive", "purge"):
        r = c.post(f"/actions/{verb}", data={"queue": "email", "all": "1"}, headers=SAME)
        assert r.status_code == 403
    r = c.post(
        "/actions/redrive",
        data={"queue": "email", "all": "1"},
        headers={"authorization": "Bearer whatever-token"},
    )
    assert r.status_code == 403
    assert dead_ids(store) == before
    assert operator_events(store) == []


# -- the token -----------------------------------------------------------------------------
def test_bearer_token_redrives_and_the_journal_says_who(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    target = dead_ids(store)[0]
    r = c.post(
        "/actions/redrive",
        data={"queue": "email", "id": target},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"action": "redrive", "queue": "email", "count": 1}
    assert target not in dead_ids(store)
    with store.queue("email").get(timeout=1.0) as d:
        assert d.message.id == target
    backend = store.backend
    assert isinstance(backend, History)
    events = backend.history(message_id=target)
    op = [e for e in events if e.event == "operator"]
    assert len(op) == 1
    assert op[0].detail["action"] == "redrive"
    assert op[0].detail["by"].startswith("token:")
    assert op[0].detail["count"] == 1
    # The trace page shows it.
    html = c.get(f"/trace?id={target}").text
    assert "redrive by token:" in html


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token-000"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": f"Bearer {TOKEN}x"},
    ],
)
def test_actions_without_the_token_change_nothing(
    store: pmsq.Broker, headers: dict[str, str]
) -> None:
    c = client(store, TOKEN)
    before = dead_ids(store)
    r = c.post("/actions/purge", data={"queue": "email", "all": "1"}, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert dead_ids(store) == before
    assert operator_events(store) == []


def test_pages_hide_action_forms_until_login(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    html = c.get("/queues/email").text
    assert "/actions/redrive" not in html
    assert "Log in" in html
    login(c, TOKEN)
    assert "/actions/redrive" in c.get("/queues/email").text


def test_wrong_token_at_the_login_form_sets_no_session(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    r = c.post("/login", data={"token": "not-the-token"}, headers=SAME)
    assert r.status_code == 401
    assert "pmsq_session" not in r.headers.get("set-cookie", "")


def test_session_cookie_actions_need_the_csrf_token_and_our_origin(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    csrf = login(c, TOKEN)
    before = dead_ids(store)
    form = {"queue": "email", "all": "1", "next": "/queues/email"}
    refused = [
        (form, SAME),  # no CSRF token
        ({**form, "csrf": "forged"}, SAME),
        ({**form, "csrf": csrf}, {"origin": "http://evil.example"}),
        ({**form, "csrf": csrf}, {"sec-fetch-site": "cross-site"}),
        (
            {**form, "csrf": csrf},
            {"origin": "http://evil.example", "sec-fetch-site": "same-origin"},
        ),
    ]
    for data, headers in refused:
        r = c.post("/actions/purge", data=data, headers=headers)
        assert r.status_code == 403, (data, headers)
        assert dead_ids(store) == before
    r = c.post("/actions/purge", data={**form, "csrf": csrf}, headers=SAME)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/queues/email?done=")
    assert dead_ids(store) == []
    assert [e.detail["action"] for e in operator_events(store)] == ["purge"]


def test_after_an_action_the_redirect_stays_on_the_dashboard(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    csrf = login(c, TOKEN)
    target = dead_ids(store)[0]
    for evil in ("//evil.example/x", "https://evil.example/", "\\\\evil"):
        r = c.post(
            "/actions/redrive",
            data={"queue": "email", "id": target, "csrf": csrf, "next": evil},
            headers=SAME,
        )
        assert r.status_code == 303
        assert r.headers["location"].startswith("/?done=")


def test_logout_ends_the_session(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    csrf = login(c, TOKEN)
    assert c.post("/logout", headers=SAME).status_code == 303
    c.cookies.clear()
    r = c.post("/actions/purge", data={"queue": "email", "all": "1", "csrf": csrf}, headers=SAME)
    assert r.status_code == 401
    assert len(dead_ids(store)) == 3


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"queue": "nope", "all": "1"}, 404),
        ({"queue": "email"}, 400),  # neither ids nor all=1: never "all" by omission
        ({"queue": "email", "id": "x" * 201}, 400),
    ],
)
def test_bad_actions_are_refused_clearly(
    store: pmsq.Broker, data: dict[str, str], status: int
) -> None:
    c = client(store, TOKEN)
    before = dead_ids(store)
    r = c.post("/actions/redrive", data=data, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == status
    assert dead_ids(store) == before


def test_unknown_verbs_and_json_bodies_are_refused(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    auth = {"authorization": f"Bearer {TOKEN}"}
    huge = {"queue": "email", "all": "1", "pad": "x" * 70_000}
    assert c.post("/actions/purge", data=huge, headers=auth).status_code == 413
    assert c.post("/actions/drop", data={"queue": "email"}, headers=auth).status_code == 400
    r = c.post("/actions/purge", json={"queue": "email", "all": "1"}, headers=auth)
    assert r.status_code == 415
    assert len(dead_ids(store)) == 3


# -- tenants ---------------------------------------------------------------------------------
@pytest.fixture
def tenant_tokens() -> dict[str, str | None]:
    return {TOKEN: None, ACME_TOKEN: "acme", GLOBEX_TOKEN: "globex"}


def test_with_tenant_tokens_reading_needs_a_token(
    store: pmsq.Broker, tenant_tokens: dict[str, str | None]
) -> None:
    c = client(store, tenant_tokens)
    assert c.get("/queues/email").status_code == 401
    assert c.get("/metrics").status_code == 401
    r = c.get("/", headers=HTML)
    assert r.status_code == 303
    assert r.headers["location"] == "/login"
    assert c.get("/healthz").status_code == 200  # says nothing about the queues


def test_a_tenant_token_sees_only_its_tenant(
    store: pmsq.Broker, tenant_tokens: dict[str, str | None]
) -> None:
    c = client(store, tenant_tokens)
    auth = {"authorization": f"Bearer {ACME_TOKEN}"}
    globex_dead = [d.message.id for d in store.tenant("globex").dead_letters("email").list()]
    acme_dead = [d.message.id for d in store.tenant("acme").dead_letters("email").list()]
    for path in ("/", "/queues/email", "/tenants", "/metrics", f"/trace?id={globex_dead[0]}"):
        text = c.get(path, headers=auth).text
        assert "globex" not in text, path
    page = c.get("/queues/email", headers=auth).text
    assert 'data-figure="dead">2<' in page
    for mid in acme_dead:
        assert f'data-id="{mid}"' in page
    assert f'data-id="{globex_dead[0]}"' not in page
    assert "No history" in c.get(f"/trace?id={globex_dead[0]}", headers=auth).text


def test_a_tenant_token_acts_only_on_its_tenant(
    store: pmsq.Broker, tenant_tokens: dict[str, str | None]
) -> None:
    c = client(store, tenant_tokens)
    auth = {"authorization": f"Bearer {ACME_TOKEN}"}
    globex = [d.message.id for d in store.tenant("globex").dead_letters("email").list()]
    # "all" means all of acme's; globex's dead letter stays.
    r = c.post("/actions/purge", data={"queue": "email", "all": "1"}, headers=auth)
    assert r.json()["count"] == 2
    assert dead_ids(store) == globex
    # Naming globex's message id through acme's token finds nothing.
    r = c.post("/actions/redrive", data={"queue": "email", "id": globex[0]}, headers=auth)
    assert r.json()["count"] == 0
    assert dead_ids(store) == globex
    events = operator_events(store)
    assert events[0].tenant == "acme"
    assert "tenant acme" in events[0].detail["by"]


# -- hostile content ---------------------------------------------------------------------------
HOSTILE = "<script>alert('x')</script>\x1b[2J\x00"


def test_hostile_keys_reasons_and_ids_are_escaped(store: pmsq.Broker) -> None:
    q = store.queue("email")
    mid = q.put({"x": HOSTILE}, key="<script>alert('k')</script>", tenant="acme")
    with q.get(timeout=1.0) as d:
        assert d.message.id == mid
        d.dead_letter(HOSTILE)
    c = client(store, TOKEN)
    login(c, TOKEN)
    pages = [
        c.get("/queues/email").text,
        c.get(f"/trace?id={mid}").text,
        c.get("/trace", params={"id": HOSTILE}).text,
        c.get("/", params={"done": HOSTILE}).text,
        c.get("/tenants").text,
    ]
    for html in pages:
        assert "<script>alert" not in html
        assert "\x1b" not in html
        assert "\x00" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\\x1b[2J" in pages[0]


# -- pauses and cancel -------------------------------------------------------------------------
def test_pause_and_resume_through_the_dashboard(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    auth = {"authorization": f"Bearer {TOKEN}"}
    r = c.post(
        "/actions/pause",
        data={"queue": "calendar", "reason": "OTA <maintenance>", "for": "600"},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    paused = store.pauses()
    assert [(p.queue, p.reason) for p in paused] == [("calendar", "OTA <maintenance>")]
    assert paused[0].until is not None
    html = c.get("/pauses").text
    assert "OTA &lt;maintenance&gt;" in html
    r = c.post("/actions/resume", data={"queue": "calendar"}, headers=auth)
    assert r.json()["count"] == 1
    assert store.pauses() == []
    assert [e.detail["action"] for e in operator_events(store)] == ["pause", "resume"]


def test_a_tenant_token_pauses_only_its_tenant(
    store: pmsq.Broker, tenant_tokens: dict[str, str | None]
) -> None:
    c = client(store, tenant_tokens)
    auth = {"authorization": f"Bearer {ACME_TOKEN}"}
    r = c.post("/actions/pause", data={"queue": "calendar", "tenant": "globex"}, headers=auth)
    assert r.status_code == 403
    assert store.pauses() == []
    c.post("/actions/pause", data={"queue": "calendar"}, headers=auth)
    assert [(p.queue, p.tenant) for p in store.pauses()] == [("calendar", "acme")]


def test_cancel_through_the_dashboard(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    auth = {"authorization": f"Bearer {TOKEN}"}
    mid = store.queue("calendar").put({"booking": 3}, key="booking:8812", tenant="acme")
    r = c.post("/actions/cancel", data={"queue": "calendar", "id": mid}, headers=auth)
    assert r.json()["count"] == 1
    r = c.post(
        "/actions/cancel",
        data={"queue": "calendar", "key": "property:1", "tenant": "acme"},
        headers=auth,
    )
    assert r.json()["count"] == 1
    assert store.stats("calendar").depth == 1


def bare(tmp_path: Path) -> pmsq.Broker:
    """A store whose backend has the required verbs only: no control, no presence."""
    from backends._bare import BareSQLite

    broker = pmsq.Broker(BareSQLite(str(tmp_path / "bare.db"), durability="memory"))
    broker.declare_queue("email")
    kill(broker, "email", 1, tenant=None, reason="smtp refused")  # a redrive form to show
    return broker


def test_pause_forms_and_routes_are_absent_without_pauses(tmp_path: Path) -> None:
    with bare(tmp_path) as store:
        c = client(store, TOKEN)
        login(c, TOKEN)
        assert "/actions/pause" not in c.get("/queues/email").text
        auth = {"authorization": f"Bearer {TOKEN}"}
        for verb in ("pause", "resume", "cancel"):
            r = c.post(f"/actions/{verb}", data={"queue": "email", "id": "x"}, headers=auth)
            assert r.status_code == 404, verb


def test_an_admin_naming_a_tenant_acts_on_that_tenant_only(store: pmsq.Broker) -> None:
    c = client(store, TOKEN)
    globex = [d.message.id for d in store.tenant("globex").dead_letters("email").list()]
    r = c.post(
        "/actions/purge",
        data={"queue": "email", "all": "1", "tenant": "acme"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert r.json()["count"] == 2
    assert dead_ids(store) == globex


def test_pmsq_trace_shows_who_acted(store: pmsq.Broker, capsys: pytest.CaptureFixture[str]) -> None:
    from pmsq.cli import main

    target = dead_ids(store)[0]
    c = client(store, TOKEN)
    c.post(
        "/actions/redrive",
        data={"queue": "email", "id": target},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert main(["trace", store.backend.path, target]) == 0
    out = capsys.readouterr().out
    assert "operator" in out
    assert "redrive by token:" in out


# -- workers ------------------------------------------------------------------------------------
def test_the_workers_page_lists_live_workers(store: pmsq.Broker) -> None:
    store.handler("calendar")(lambda msg: None)
    with pmsq.Worker(store, concurrency=2):
        live = store.workers()
        assert live
        html = client(store).get("/workers").text
        for w in live:
            assert f'data-worker="{w.id}"' in html
    c = client(store, {TOKEN: None, ACME_TOKEN: "acme"})
    assert c.get("/workers", headers={"authorization": f"Bearer {ACME_TOKEN}"}).status_code == 403


def test_without_worker_presence_there_is_no_workers_page(tmp_path: Path) -> None:
    with bare(tmp_path) as store:
        html = client(store).get("/workers").text
        assert "records no worker heartbeats" in html
        assert 'href="/workers"' not in client(store).get("/").text


def test_names_another_writer_planted_in_the_store_are_escaped(store: pmsq.Broker) -> None:
    """Queue and tenant names the API would refuse, written into the file directly."""
    import sqlite3

    target = dead_ids(store)[0]
    planted = "<script>alert(1)</script>\x07"
    conn = sqlite3.connect(store.backend.path)
    with conn:
        conn.execute(
            "UPDATE pmsq_messages SET tenant = ?, key = ? WHERE id = ?", (planted, planted, target)
        )
        conn.execute(
            "UPDATE pmsq_journal SET queue = ?, tenant = ? WHERE message_id = ?",
            (planted, planted, target),
        )
    conn.close()
    c = client(store)
    for path in ("/queues/email", f"/trace?id={target}"):
        r = c.get(path)
        assert r.status_code == 200
        assert "<script>alert(1)" not in r.text
        assert "\x07" not in r.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;\\x07" in r.text
