"""URL parsing and plugin registration (no server needed)."""

from __future__ import annotations

from importlib import metadata

import pytest
from pmsq_postgres import PostgresBackend, parse_url, redact

import pmsq
from pmsq.backends.registry import installed_schemes


def test_both_schemes_are_registered_entry_points() -> None:
    eps = {ep.name: ep for ep in metadata.entry_points(group="pmsq.backends")}
    assert eps["postgresql"].load() is PostgresBackend
    assert eps["postgres"].load() is PostgresBackend
    assert {"postgresql", "postgres"} <= set(installed_schemes())


def test_own_parameters_are_taken_out_of_the_libpq_url() -> None:
    u = parse_url("postgresql://app:s3cret@db:5433/pms?schema=queues&sslmode=disable&pool_size=4")
    assert u.schema == "queues"
    assert u.pool_size == 4
    assert "schema" not in u.conninfo
    assert "pool_size" not in u.conninfo
    assert "sslmode=disable" in u.conninfo
    assert "s3cret" not in u.display
    assert "***" in u.display


def test_keyword_arguments_win_over_the_url() -> None:
    u = parse_url("postgres://h/db?schema=a&pool_size=3", schema="b", pool_size=7, pool_min=9)
    assert (u.schema, u.pool_size, u.pool_min) == ("b", 7, 7)
    assert u.conninfo.startswith("postgresql://")


def test_defaults() -> None:
    u = parse_url("postgresql://127.0.0.1/db")
    assert (u.schema, u.pool_size, u.pool_min, u.notify) == ("pmsq", 10, 1, False)


def test_notify_flag() -> None:
    assert parse_url("postgresql://h/db?notify=on").notify
    assert not parse_url("postgresql://h/db?notify=on", notify=False).notify
    assert "notify" not in parse_url("postgresql://h/db?notify=1").conninfo


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h/db?schema=Bad-Name",
        "postgresql://h/db?schema=x;drop",
        "postgresql://h/db?pool_size=0",
        "postgresql://h/db?pool_size=many",
        "postgresql://h/db?notify=sometimes",
        "mysql://h/db",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(pmsq.ConfigurationError):
        parse_url(url)


def test_redact_leaves_passwordless_urls_alone() -> None:
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_unreachable_server_is_backend_unavailable() -> None:
    # Port 1 on localhost: nothing listens there, the refusal is immediate.
    with pytest.raises(pmsq.BackendUnavailable) as info:
        pmsq.connect("postgresql://nobody:pw@127.0.0.1:1/db?connect_timeout=2")
    assert "pw" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_bad_durability_is_rejected_before_connecting() -> None:
    with pytest.raises(pmsq.ConfigurationError):
        PostgresBackend("postgresql://127.0.0.1:1/db", durability="sometimes")


def test_misspelt_option_is_refused_before_connecting() -> None:
    with pytest.raises(pmsq.ConfigurationError, match="pool_sise"):
        pmsq.connect("postgresql://127.0.0.1:1/db", pool_sise=3)
