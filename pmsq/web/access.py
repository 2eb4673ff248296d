"""Who may do what on the dashboard: tokens, login sessions and CSRF checks.

The rules, decided here and nowhere else:

- Without a token the dashboard only reads: action forms are hidden and
  every action answers 403.
- With one token (a string) pages are open to read; an action needs the
  token, as ``Authorization: Bearer <token>`` or through a session cookie
  set by the login form.
- With a mapping of tokens to tenants (``None``: every tenant), every page
  needs a token, and a tenant's token sees and touches only its tenant.
- A request that rides on the session cookie must carry the session's CSRF
  token in its form, and a browser's ``Origin`` and ``Sec-Fetch-Site``
  headers must say the request came from the dashboard's own pages. A
  Bearer header needs neither: another site's page cannot make a browser
  send one.

Session cookies are signed with a key made when the app starts: restarting
the dashboard logs everyone out, and nothing about a session is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping

import attrs

from pmsq.config import check_tenant
from pmsq.errors import ConfigurationError

__all__ = ["Access", "Principal", "TokenSpec"]

#: ``pmsq.web.app(token=...)``: one token, or tokens mapped to a tenant (``None``: all).
TokenSpec = str | Mapping[str, str | None] | None

COOKIE = "pmsq_session"


@attrs.frozen
class Principal:
    """Whoever a valid token belongs to.

    Attributes:
        who: How the journal names them: ``token:<fingerprint>`` and the tenant.
        tenant: The only tenant they see, or ``None`` for every tenant.
        fingerprint: The first 12 hex digits of the token's SHA-256.
    """

    who: str
    tenant: str | None
    fingerprint: str


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _check_token(token: object) -> str:
    if not isinstance(token, str) or len(token.strip()) < 8 or token != token.strip():
        raise ConfigurationError(
            "a dashboard token must be a string of at least 8 characters without surrounding "
            "spaces (make one with: python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    return token


class Access:
    """The tokens of one dashboard and the sessions signed for them.

    Args:
        token: ``None`` (read-only), one token, or a mapping of tokens to tenants.

    Raises:
        ConfigurationError: a token shorter than 8 characters, or an invalid tenant id.
    """

    def __init__(self, token: TokenSpec) -> None:
        tokens: dict[str, str | None]
        if token is None:
            tokens = {}
        elif isinstance(token, str):
            tokens = {_check_token(token): None}
        elif isinstance(token, Mapping):
            if not token:
                raise ConfigurationError("token= got an empty mapping; give at least one token")
            tokens = {}
            for t, tenant in token.items():
                try:
                    tokens[_check_token(t)] = check_tenant(tenant)
                except ConfigurationError as exc:
                    raise ConfigurationError(f"token= mapping: {exc}") from None
        else:
            raise ConfigurationError(
                f"token= takes None, a string or a mapping of tokens to tenants, got {token!r}"
            )
        self._by_digest = {
            hashlib.sha256(t.encode()).digest(): Principal(
                who=f"token:{_fingerprint(t)}" + (f" (tenant {tenant})" if tenant else ""),
                tenant=tenant,
                fingerprint=_fingerprint(t),
            )
            for t, tenant in tokens.items()
        }
        self._by_fingerprint = {p.fingerprint: p for p in self._by_digest.values()}
        self._key = secrets.token_bytes(32)
        #: Actions are possible at all.
        self.writable = bool(tokens)
        #: Reading needs a token too (some token is scoped to a tenant).
        self.login_required = isinstance(token, Mapping)

    def from_token(self, token: str) -> Principal | None:
        """The principal of ``token``, or ``None`` for a wrong one (constant-time lookup)."""
        # Comparing digests keeps the lookup's timing independent of the token's prefix.
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def new_session(self, principal: Principal) -> str:
        """A cookie value for a fresh session of ``principal``."""
        sid = secrets.token_urlsafe(18)
        body = f"{sid}.{principal.fingerprint}"
        return f"{body}.{self._sign(body)}"

    def from_cookie(self, value: str | None) -> tuple[Principal, str] | None:
        """``(principal, session id)`` of a cookie this app signed, else ``None``."""
        if not value or value.count(".") != 2:
            return None
        sid, fingerprint, signature = value.split(".")
        if not hmac.compare_digest(self._sign(f"{sid}.{fingerprint}"), signature):
            return None
        principal = self._by_fingerprint.get(fingerprint)
        return None if principal is None else (principal, sid)

    def csrf_token(self, sid: str) -> str:
        """The CSRF token the session ``sid``'s forms carry."""
        return self._sign(f"csrf:{sid}")

    def csrf_ok(self, sid: str, given: str | None) -> bool:
        """Whether ``given`` is session ``sid``'s CSRF token."""
        return given is not None and hmac.compare_digest(self.csrf_token(sid), given)


def same_origin(origin: str | None, fetch_site: str | None, host_url: str) -> bool:
    """Whether a browser says the request came from the dashboard's own pages.

    Args:
        origin: The ``Origin`` header, if sent.
        fetch_site: The ``Sec-Fetch-Site`` header, if sent.
        host_url: ``scheme://host[:port]`` the request was made to.

    Returns:
        False when either header names another site; True when they agree or
        are absent (non-browser clients send neither).
    """
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    return origin is None or origin == host_url
