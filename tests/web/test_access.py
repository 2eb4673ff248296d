"""Tokens, signed sessions and CSRF tokens (pmsq.web.access)."""

from __future__ import annotations

import pytest

from pmsq.errors import ConfigurationError
from pmsq.web.access import Access, same_origin


def test_no_token_is_read_only() -> None:
    access = Access(None)
    assert not access.writable
    assert not access.login_required
    assert access.from_token("anything-at-all") is None


def test_one_token_acts_on_every_tenant() -> None:
    access = Access("s3cret-token")
    p = access.from_token("s3cret-token")
    assert p is not None
    assert p.tenant is None
    assert access.writable
    assert not access.login_required
    assert access.from_token("s3cret-tokeN") is None
    assert access.from_token("") is None


def test_a_mapping_scopes_tokens_to_tenants_and_requires_login() -> None:
    access = Access({"admin-token-1": None, "acme-token-1": "acme"})
    admin = access.from_token("admin-token-1")
    acme = access.from_token("acme-token-1")
    assert admin is not None
    assert acme is not None
    assert admin.tenant is None
    assert acme.tenant == "acme"
    assert "acme" in acme.who
    assert access.login_required


@pytest.mark.parametrize(
    "token",
    ["short", "", "  padded-token  ", 12345678, {}, {"ok-token-123": "bad tenant!"}, {"x": None}],
)
def test_bad_tokens_are_refused_with_advice(token: object) -> None:
    with pytest.raises(ConfigurationError, match="token"):
        Access(token)  # type: ignore[arg-type]


def test_a_session_cookie_names_its_principal_and_cannot_be_forged() -> None:
    access = Access({"admin-token-1": None, "acme-token-1": "acme"})
    acme = access.from_token("acme-token-1")
    assert acme is not None
    cookie = access.new_session(acme)
    found = access.from_cookie(cookie)
    assert found is not None
    assert found[0] == acme
    sid, fingerprint, signature = cookie.split(".")
    admin = access.from_token("admin-token-1")
    assert admin is not None
    # Swapping in the admin's fingerprint breaks the signature.
    assert access.from_cookie(f"{sid}.{admin.fingerprint}.{signature}") is None
    assert access.from_cookie(f"{sid}x.{fingerprint}.{signature}") is None
    assert access.from_cookie("garbage") is None
    assert access.from_cookie(None) is None
    # Another app (another key) does not accept this one's cookies.
    assert Access({"admin-token-1": None, "acme-token-1": "acme"}).from_cookie(cookie) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    access = Access("s3cret-token")
    p = access.from_token("s3cret-token")
    assert p is not None
    one = access.from_cookie(access.new_session(p))
    two = access.from_cookie(access.new_session(p))
    assert one is not None
    assert two is not None
    assert access.csrf_ok(one[1], access.csrf_token(one[1]))
    assert not access.csrf_ok(one[1], access.csrf_token(two[1]))
    assert not access.csrf_ok(one[1], None)
    assert not access.csrf_ok(one[1], "")


@pytest.mark.parametrize(
    ("origin", "site", "ok"),
    [
        (None, None, True),  # curl, scripts
        ("http://127.0.0.1:8377", "same-origin", True),
        ("http://127.0.0.1:8377", None, True),
        ("http://evil.example", None, False),
        ("http://127.0.0.1:8377", "cross-site", False),
        (None, "same-site", False),
        ("null", None, False),
    ],
)
def test_same_origin(origin: str | None, site: str | None, ok: bool) -> None:
    assert same_origin(origin, site, "http://127.0.0.1:8377") is ok
