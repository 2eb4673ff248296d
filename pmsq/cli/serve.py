"""``pmsq serve URL``: the web dashboard over a store, with ``/metrics`` and ``/healthz``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys

from pmsq.cli._common import CommandError, add_url, open_store, routes_of

EXAMPLES = """\
Without a token the dashboard only reads: pages, /metrics and /healthz.
With one, redrive, purge, cancel, pause and resume need it, as
"Authorization: Bearer <token>" or through the login form. Prefer the
PMSQ_WEB_TOKEN environment variable to --token: a command line is visible
to every user of the machine (ps).

examples:
  pmsq serve pms.db                                  # http://127.0.0.1:8377/
  PMSQ_WEB_TOKEN=$(cat /etc/pmsq/token) pmsq serve /var/lib/pms/pms.db
  pmsq serve pms.db --host 0.0.0.0 --port 9000   # all interfaces: use a token
  curl -s localhost:8377/metrics                     # Prometheus text
  curl -s -H "Authorization: Bearer $PMSQ_WEB_TOKEN" \\
       -d queue=email -d all=1 localhost:8377/actions/redrive
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535, got {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser(
        "serve",
        help="web dashboard with /metrics and /healthz (needs pmsq[web])",
        description=(
            "Serve a web dashboard of the store: queues and tenants with their figures and "
            "charts, dead letters, schedules, pauses and message traces, plus /metrics "
            "(Prometheus text) and /healthz. Listens on 127.0.0.1 unless --host says otherwise."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8377, help="port (default 8377; 0: any free)")
    p.add_argument(
        "--token",
        default=None,
        help="token that actions need (default: $PMSQ_WEB_TOKEN; none: read-only)",
    )
    p.set_defaults(func=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    from pmsq.web import INSTALL_HINT, TOKEN_ENV

    try:
        import uvicorn
    except ModuleNotFoundError:
        raise CommandError(INSTALL_HINT) from None
    import pmsq.web

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    broker = open_store(args.url, routes_of(args))
    try:
        app = pmsq.web.app(broker, token=token)
    except BaseException:
        broker.close()
        raise
    mode = "actions need the token" if token else "read-only: no token given"
    if not _loopback(args.host):
        warning = "" if token else "; anyone who can reach it can read every queue"
        print(f"pmsq serve: listening on {args.host}, not only this machine{warning}",
              file=sys.stderr)  # fmt: skip
    try:
        # Bound here, before serving, so the address printed is the one in use
        # (--port 0 picks a free port) and a busy port is one clear line.
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        broker.close()
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        # Listening before the address is printed: a client that reads it and
        # connects at once waits in the backlog until uvicorn serves.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        broker.close()
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"pmsq dashboard on http://{shown}:{port}/ ({mode})", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again
    # through the handlers it found: with these, that ends in exit status 0.
    stopped: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda number, _frame: stopped.append(number))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        broker.close()
    return 0
