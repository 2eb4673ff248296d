"""The dashboard's ASGI app: routes, authentication and rendering.

Pages are rendered on the server with Jinja2 (autoescaping everything) and
carry their charts as inline SVG, so the dashboard needs no JavaScript and
no build step. Reads and actions call the broker in worker threads.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

import attrs
import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from pmsq.broker import Broker
from pmsq.errors import ConfigurationError, PmsqError
from pmsq.monitor import figures
from pmsq.monitor.exposition import as_prometheus, report
from pmsq.web import charts, views
from pmsq.web.access import COOKIE, Access, Principal, TokenSpec, same_origin
from pmsq.web.actions import OPERATOR_EVENT, Action, perform

__all__ = ["create_app"]

_MAX_FORM = 64 * 1024
# C0/C1 controls (tab and newline kept) are shown as escapes, never passed to the page.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SECURITY_HEADERS = {
    # Pages run no script at all: a payload that slipped through escaping still cannot run.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _visible(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, Markup):
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value


def _when(value: dt.datetime | float | None) -> str:
    if value is None:
        return "-"
    if not isinstance(value, dt.datetime):
        value = views.utc(value)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pmsq.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_visible,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        age=figures.fmt_age,
        ms=figures.fmt_ms,
        pct=figures.fmt_pct,
        count=figures.fmt_count,
        when=_when,
        per_s=lambda per_minute: figures.fmt_rate(per_minute / 60.0),
    )
    from pmsq.cli import trace as timeline

    env.globals.update(
        bars=charts.bars,
        line=charts.line,
        shared_top=charts.shared_top,
        OPERATOR_EVENT=OPERATOR_EVENT,
        # The timeline reads the journal the way ``pmsq trace`` does.
        where=timeline._where,
        took=timeline._took,
        error=timeline._error,
        describe=timeline.describe,
    )
    return env


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Dashboard:
    """The state behind one app: the broker, the tokens and the templates."""

    def __init__(self, broker: Broker, access: Access, *, owns_broker: bool) -> None:
        self.broker = broker
        self.access = access
        self.owns_broker = owns_broker
        self.env = _environment()

    # -- who is asking ---------------------------------------------------------------
    def _bearer(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        principal = self.access.from_token(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise _Refused(401, "the Authorization header holds no valid token")
        return principal

    def session(self, request: Request) -> tuple[Principal, str] | None:
        """The logged-in principal and session id of the request's cookie, if any."""
        return self.access.from_cookie(request.cookies.get(COOKIE))

    def viewer(self, request: Request) -> Principal | None:
        """Who reads; raises ``_Refused`` when the pages need a token and none came."""
        principal = self._bearer(request)
        if principal is None:
            found = self.session(request)
            principal = None if found is None else found[0]
        if principal is None and self.access.login_required:
            raise _Refused(401, "this dashboard needs a token to read it; log in first")
        return principal

    # -- rendering ---------------------------------------------------------------------
    def base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def page(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        found = self.session(request)
        principal = None if found is None else found[0]
        context.setdefault("title", template.removesuffix(".html"))
        html = self.env.get_template(template).render(
            base=self.base(request),
            principal=principal,
            csrf=None if found is None else self.access.csrf_token(found[1]),
            writable=self.access.writable,
            can_act=found is not None,
            can_pause=views.can_pause(self.broker),
            can_cancel=views.can_cancel(self.broker),
            can_list_workers=views.can_list_workers(self.broker),
            done=request.query_params.get("done"),
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def refusal(self, request: Request, refused: _Refused) -> Response:
        headers = dict(_SECURITY_HEADERS)
        if refused.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="pmsq"'
        if "text/html" in request.headers.get("accept", ""):
            return self.page(
                request, "refused.html", refused.status, message=refused.message, title="refused"
            )
        return PlainTextResponse(refused.message + "\n", refused.status, headers=headers)


Handler = Callable[[Dashboard, Request], Awaitable[Response]]


def _route(handler: Handler, dash: Dashboard) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(dash, request)
        except _Refused as refused:
            if refused.status == 401 and request.method == "GET" and dash.access.writable:
                wants_html = "text/html" in request.headers.get("accept", "")
                if wants_html and request.url.path.rstrip("/") != dash.base(request) + "/login":
                    return RedirectResponse(dash.base(request) + "/login", status_code=303)
            return dash.refusal(request, refused)

    return endpoint


# -- pages -------------------------------------------------------------------------------
async def overview(dash: Dashboard, request: Request) -> Response:
    viewer = dash.viewer(request)
    tenant = None if viewer is None else viewer.tenant
    data = await run_in_threadpool(views.overview, dash.broker, tenant)
    return dash.page(request, "overview.html", data=data, scope_tenant=tenant, title="queues")


async def queue(dash: Dashboard, request: Request) -> Response:
    viewer = dash.viewer(request)
    tenant = None if viewer is None else viewer.tenant
    name = request.path_params["name"]
    if not await run_in_threadpool(views.queue_exists, dash.broker, name):
        raise _Refused(404, f"no queue {name!r} in this store")
    data = await run_in_threadpool(views.queue_page, dash.broker, tenant, name)
    return dash.page(
        request, "queue.html", q=data, queue_name=name, title=name, scope_tenant=tenant
    )


async def tenants(dash: Dashboard, request: Request) -> Response:
    viewer = dash.viewer(request)
    tenant = None if viewer is None else viewer.tenant
    data = await run_in_threadpool(views.overview, dash.broker, tenant)
    only = request.path_params.get("tenant")
    shown = data.tenants if only is None else {only: data.tenants.get(only, ())}
    return dash.page(
        request, "tenants.html", tenants=shown, charts=data.charts, only=only, title="tenants"
    )


async def schedules(dash: Dashboard, request: Request) -> Response:
    viewer = dash.viewer(request)
    tenant = None if viewer is None else viewer.tenant
    found = await run_in_threadpool(views.schedules, dash.broker, tenant)
    return dash.page(request, "schedules.html", schedules=found, title="schedules")


async def pauses(dash: Dashboard, request: Request) -> Response:
    viewer = dash.viewer(request)
    tenant = None if viewer is None else viewer.tenant
    found = await run_in_threadpool(views.pauses, dash.broker, tenant)
    queues = [c.name for c in await run_in_threadpool(dash.broker.queues)]
    return dash.page(request, "pauses.html", pauses=found, queues=queues, title="pauses")


async def workers(dash: Dashboard, request: Request) -> Response:
    viewer = dash.viewer(request)
    if viewer is not None and viewer.tenant is not None:
        # Hosts and processes are the deployment's, not a tenant's business.
        raise _Refused(403, "a tenant's token does not see the workers")
    found = await run_in_threadpool(views.workers, dash.broker)
    return dash.page(request, "workers.html", workers=found, title="workers")


async def trace(dash: Dashboard, request: Request) -> Response:
    viewer = dash.viewer(request)
    tenant = None if viewer is None else viewer.tenant
    ident = request.query_params.get("id", "").strip()[:200]
    messages = None
    if ident:
        messages = await run_in_threadpool(views.trace, dash.broker, tenant, ident)
    return dash.page(request, "trace.html", ident=ident, messages=messages, title="trace")


async def metrics(dash: Dashboard, request: Request) -> Response:
    viewer = dash.viewer(request)
    tenant = None if viewer is None else viewer.tenant
    r = await run_in_threadpool(lambda: report(dash.broker, tenant=tenant))
    return PlainTextResponse(as_prometheus(r), media_type="text/plain; version=0.0.4")


async def healthz(dash: Dashboard, request: Request) -> Response:
    """200 when the store answers; with ``?consumers=1`` also every due queue is served."""
    want_consumers = request.query_params.get("consumers") in ("1", "true", "yes")

    def check() -> tuple[int, dict[str, Any]]:
        queues = dash.broker.queues()
        body: dict[str, Any] = {"status": "ok", "queues": len(queues)}
        if want_consumers:
            snap = report(dash.broker).stats
            # QueueStats.consumers is None where the store records no heartbeats;
            # a health check that cannot tell must not say yes.
            consumers = {n: qs.consumers for n, qs in snap.queues.items()}
            if any(c is None for c in consumers.values()):
                return 503, {"status": "unknown", "error": "this pmsq does not track consumers"}
            unserved = sorted(n for n, qs in snap.queues.items() if qs.ready and not consumers[n])
            if unserved:
                return 503, {"status": "no consumers", "queues_without_consumers": unserved}
        return 200, body

    try:
        status, body = await run_in_threadpool(check)
    except PmsqError as exc:
        status, body = 503, {"status": "unavailable", "error": str(exc)}
    return JSONResponse(body, status_code=status)


# -- login -------------------------------------------------------------------------------
async def login(dash: Dashboard, request: Request) -> Response:
    if request.method == "GET":
        return dash.page(request, "login.html", error=None, title="log in")
    _check_origin(request)
    form = await _form(request)
    principal = dash.access.from_token(form.get("token", ""))
    if principal is None:
        return dash.page(request, "login.html", 401, error="wrong token", title="log in")
    response = RedirectResponse(dash.base(request) + "/", status_code=303)
    response.set_cookie(
        COOKIE,
        dash.access.new_session(principal),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=dash.base(request) + "/",
    )
    return response


async def logout(dash: Dashboard, request: Request) -> Response:
    _check_origin(request)
    response = RedirectResponse(dash.base(request) + "/", status_code=303)
    response.delete_cookie(COOKIE, path=dash.base(request) + "/")
    return response


# -- actions -----------------------------------------------------------------------------
def _check_origin(request: Request) -> None:
    host_url = f"{request.url.scheme}://{request.url.netloc}"
    if not same_origin(
        request.headers.get("origin"), request.headers.get("sec-fetch-site"), host_url
    ):
        raise _Refused(403, "refused: the request came from another site")


async def _form(request: Request) -> dict[str, str]:
    form = await _form_lists(request)
    return {k: v[-1] for k, v in form.items()}


async def _form_lists(request: Request) -> dict[str, list[str]]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_FORM:
        raise _Refused(413, "form too large")  # before reading a byte of it
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise _Refused(413, "form too large")
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if body and kind != "application/x-www-form-urlencoded":
        raise _Refused(415, "send the action as application/x-www-form-urlencoded")
    try:
        return parse_qs(body.decode(), keep_blank_values=False, strict_parsing=False)
    except UnicodeDecodeError:
        raise _Refused(400, "the form is not UTF-8") from None


def _actor(dash: Dashboard, request: Request, form: dict[str, list[str]]) -> tuple[Principal, bool]:
    """Who may act: ``(principal, from the session cookie)``; refuses everyone else."""
    if not dash.access.writable:
        raise _Refused(403, "this dashboard is read-only: it was started without a token")
    principal = dash._bearer(request)
    if principal is not None:
        return principal, False
    found = dash.session(request)
    if found is None:
        raise _Refused(401, "actions need the dashboard's token (Authorization: Bearer or log in)")
    _check_origin(request)
    if not dash.access.csrf_ok(found[1], next(iter(form.get("csrf", [])[-1:]), None)):
        raise _Refused(403, "refused: the form's CSRF token is missing or stale; reload the page")
    return found[0], True


def _duration(text: str | None) -> float | None:
    """A pause's ``for`` field: seconds until it lifts by itself (empty: until resumed)."""
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigurationError(f"'for' takes seconds, got {text!r}") from None
    if not 0 < seconds <= 366 * 86400:
        raise ConfigurationError(f"'for' takes seconds in (0, 1 year], got {text!r}")
    return seconds


def _parse(verb: str, form: dict[str, list[str]]) -> tuple[Action, float | None]:
    one = {k: v[-1].strip() for k, v in form.items() if v and v[-1].strip()}
    ids = tuple(i.strip() for i in form.get("id", []) if i.strip())
    if verb in ("redrive", "purge") and not ids and one.get("all") != "1":
        raise ConfigurationError("name the dead letters (id=...) or send all=1")
    duration = _duration(one.get("for"))
    action = Action(
        verb=verb,
        queue=one.get("queue", ""),
        ids=ids or None,
        tenant=one.get("tenant"),
        key=one.get("key"),
        reason=one.get("reason"),
    )
    return action, duration


async def act(dash: Dashboard, request: Request) -> Response:
    verb = request.path_params["verb"]
    form = await _form_lists(request)
    principal, browser = _actor(dash, request, form)
    try:
        action, duration = _parse(verb, form)
    except ConfigurationError as exc:
        raise _Refused(400, str(exc)) from None
    if verb in ("pause", "resume") and not views.can_pause(dash.broker):
        raise _Refused(404, "this pmsq has no pauses")
    if verb == "cancel" and not views.can_cancel(dash.broker):
        raise _Refused(404, "this pmsq cannot cancel messages")
    if not await run_in_threadpool(views.queue_exists, dash.broker, action.queue):
        raise _Refused(404, f"no queue {action.queue!r} in this store")
    client = request.client.host if request.client else "unknown"

    def run() -> int:
        done = action
        if duration is not None:
            done = attrs.evolve(action, until=dash.broker.clock.time() + duration)
        return perform(dash.broker, done, principal, client=client)

    try:
        count = await run_in_threadpool(run)
    except PermissionError as exc:
        raise _Refused(403, str(exc)) from None
    except ConfigurationError as exc:
        raise _Refused(400, str(exc)) from None
    if not browser:
        return JSONResponse({"action": verb, "queue": action.queue, "count": count})
    back = (form.get("next") or [""])[-1]
    # Only a path of this dashboard: never an open redirect to another site.
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/"
    done = urlencode({"done": f"{action.describe()}: {count} changed"})
    return RedirectResponse(f"{dash.base(request)}{back}?{done}", status_code=303)


def create_app(broker: Broker, token: TokenSpec, *, owns_broker: bool) -> Starlette:
    """The dashboard as a Starlette app (see :func:`pmsq.web.app`)."""
    dash = Dashboard(broker, Access(token), owns_broker=owns_broker)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        if dash.owns_broker:
            await run_in_threadpool(dash.broker.close)

    def r(path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, _route(handler, dash), methods=list(methods))

    app = Starlette(
        routes=[
            r("/", overview),
            r("/queues/{name}", queue),
            r("/tenants", tenants),
            r("/tenants/{tenant}", tenants),
            r("/schedules", schedules),
            r("/pauses", pauses),
            r("/workers", workers),
            r("/trace", trace),
            r("/metrics", metrics),
            r("/healthz", healthz),
            r("/login", login, ("GET", "POST")),
            r("/logout", logout, ("POST",)),
            r("/actions/{verb}", act, ("POST",)),
        ],
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    app.state.broker = broker
    return app
