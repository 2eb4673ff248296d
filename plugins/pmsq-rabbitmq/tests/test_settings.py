"""URL options, names and routing: no server needed."""

from __future__ import annotations

import pytest
from pmsq_rabbitmq.routing import step_for
from pmsq_rabbitmq.settings import Names, parse_url
from pmsq_rabbitmq.wire import key_route

import pmsq


def test_options_are_split_off_and_the_rest_goes_to_pika() -> None:
    s = parse_url("amqp://u:secret@h:5673/v?prefix=pms&shards=8&delay_steps=30,2&heartbeat=15")
    assert (s.prefix, s.shards, s.delay_steps) == ("pms", 8, (2.0, 30.0))
    assert (s.params.host, s.params.port, s.params.virtual_host) == ("h", 5673, "v")
    assert s.params.heartbeat == 15
    assert "secret" not in s.display


def test_heartbeats_are_off_unless_asked_for() -> None:
    assert parse_url("amqp://localhost/").params.heartbeat == 0


@pytest.mark.parametrize(
    "url",
    [
        "amqp://localhost/?prefix=has:colon",
        "amqp://localhost/?shards=0",
        "amqp://localhost/?shards=two",
        "amqp://localhost/?delay_steps=",
        "amqp://localhost/?meta_ttl=-1",
        "http://localhost/",
    ],
)
def test_bad_options_are_configuration_errors(url: str) -> None:
    with pytest.raises(pmsq.ConfigurationError):
        parse_url(url)


def test_names_of_two_queues_never_collide() -> None:
    n = Names("pmsq")
    # "a.s1" is a valid queue name; its main queue must not be a shard of "a".
    objects_a = {n.main("a"), n.dead("a"), n.shard("a", 1), n.delay("a", 5), n.dlx("a")}
    objects_b = {n.main("a.s1"), n.dead("a.s1"), n.shard("a.s1", 1), n.delay("a.s1", 5)}
    assert not objects_a & objects_b


@pytest.mark.parametrize(
    ("delay", "step"), [(0.01, 1), (1, 1), (1.01, 5), (29, 30), (300, 300), (5000, 300)]
)
def test_delays_round_up_to_a_step(delay: float, step: float) -> None:
    assert step_for(delay, (1.0, 5.0, 30.0, 300.0)) == step


def test_key_routes_separate_tenants_and_fit_a_routing_key() -> None:
    assert key_route("acme", "property:1") != key_route("globex", "property:1")
    assert key_route(None, "k" * 512) == key_route(None, "k" * 512)
    assert len(key_route(None, "k" * 512)) <= 255
