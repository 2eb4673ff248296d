"""pmsq's web dashboard: ``pmsq serve URL``, or ``pmsq.web.app(...)`` inside a web app.

Install it with the ``web`` extra (``pip install 'pmsq[web]'``; from a
checkout, ``pip install '.[web]'``): Starlette, Jinja2 and, for ``pmsq
serve``, uvicorn. The core install does not need them.

Example:
    Mount the dashboard in a FastAPI or Starlette app::

        from starlette.routing import Mount
        routes = [Mount("/queues", app=pmsq.web.app(broker, token=os.environ["PMSQ_WEB_TOKEN"]))]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pmsq.errors import ConfigurationError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from pmsq import Broker

__all__ = ["INSTALL_HINT", "TOKEN_ENV", "app"]

#: The environment variable ``pmsq serve`` reads the token from (``--token`` wins).
TOKEN_ENV = "PMSQ_WEB_TOKEN"
#: How to get the dashboard's dependencies.
INSTALL_HINT = (
    "the dashboard needs the web extra: pip install 'pmsq[web]' "
    "(from a checkout of pmsq: pip install '.[web]')"
)


def app(
    url_or_broker: str | Broker,
    token: str | Mapping[str, str | None] | None = None,
) -> Starlette:
    """The dashboard as an ASGI app to serve or mount (FastAPI, Starlette, Django's ASGI).

    Pages: queues and tenants with their figures and per-minute charts, a
    queue's dead letters (redrive, purge), schedules, pauses, a message's
    trace; ``/metrics`` (Prometheus text) and ``/healthz``.

    Args:
        url_or_broker: A store URL (connected now, closed at the app's
            shutdown) or a broker the app shares with its caller.
        token: ``None``: read-only, every action refused with 403. A string:
            pages are readable, actions need it (``Authorization: Bearer
            <token>``, or the login form's session with its CSRF token). A
            mapping of tokens to tenant ids (``None`` for every tenant): every
            page needs a token, and a tenant's token sees and acts on its
            tenant only.

    Returns:
        A Starlette application.

    Raises:
        ConfigurationError: the web extra is not installed; a token shorter
            than 8 characters; an invalid tenant id or URL.
        StorageError: the store cannot be opened.
    """
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"{INSTALL_HINT} ({exc.name} is missing)") from None
    import pmsq
    from pmsq.web.access import Access
    from pmsq.web.routes import create_app

    Access(token)  # bad tokens fail before a store is opened
    if isinstance(url_or_broker, str):
        return create_app(pmsq.connect(url_or_broker), token, owns_broker=True)
    if not isinstance(url_or_broker, pmsq.Broker):
        raise ConfigurationError(
            f"pmsq.web.app() takes a store URL or a pmsq.Broker, got {url_or_broker!r}"
        )
    return create_app(url_or_broker, token, owns_broker=False)
