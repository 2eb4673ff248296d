"""The operator commands with routes (``--route PATTERN=URL``, ``--routes FILE``) and
``pmsq migrate SRC DST --queue Q`` moving one queue to the store its route will name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli.conftest import Run

import pmsq


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, Path]:
    """main.db (email) and payments.db (payments, with a blocked key and a dead letter)."""
    main, pay = tmp_path / "main.db", tmp_path / "payments.db"
    with pmsq.connect(str(main), routes={"payments.#": str(pay)}, durability="normal") as b:
        b.declare_queue("email")
        b.declare_queue("payments", max_attempts=1)
        b.subscribe("booking.*", queue="email")
        b.subscribe("booking.*", queue="payments")
        b.publish("booking.created", {"n": 1}, key="property:1")
        with b.queue("payments").get(timeout=0) as d:
            d.dead_letter("card declined")
    return main, pay


def test_stats_peek_and_put_take_routes_as_flags_or_a_file(
    cli: Run, stores: tuple[Path, Path], tmp_path: Path
) -> None:
    main, pay = stores
    code, out, err = cli("stats", str(main), "--route", f"payments.#={pay}", "--json")
    assert code == 0, err
    queues = json.loads(out)["queues"]
    assert (queues["email"]["ready"], queues["payments"]["dead"]) == (1, 1)

    routes = tmp_path / "routes.toml"
    routes.write_text(f'[routes]\n"payments.#" = "sqlite:///{pay}"\n')
    code, out, err = cli("put", str(main), "payments", '{"n": 2}', "--routes", str(routes))
    assert code == 0, err
    with pmsq.connect(str(pay)) as p:
        assert [m.payload for m, _ in p.queue("payments").peek(10)] == [{"n": 2}]
    code, out, err = cli("dlq", "list", str(main), "payments", "--routes", str(routes))
    assert code == 0, err
    assert "card declined" in out

    # Without the route the payments queue is not in main.db: the command says so.
    code, out, err = cli("peek", str(main), "payments")
    assert code == 1
    assert "no queue 'payments'" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--route", "payments.#"], "PATTERN=URL"),
        (["--route", "pay ments=x.db"], "invalid topic pattern"),
        (["--route", "payments.#=missing.db"], "no store at missing.db"),
        (["--routes", "nope.toml"], "no routes file"),
    ],
)
def test_bad_routes_on_the_command_line_are_refused(
    cli: Run,
    stores: tuple[Path, Path],
    args: list[str],
    words: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = cli("stats", str(stores[0]), *args)
    assert code in (1, 2)
    assert words in err
    assert not (tmp_path / "missing.db").exists()


def test_migrate_one_queue_then_route_it_there(cli: Run, tmp_path: Path) -> None:
    main, pay = tmp_path / "main.db", tmp_path / "pay.db"
    with pmsq.connect(str(main), durability="normal") as b:
        b.declare_queue("email")
        b.declare_queue("payments", max_attempts=1, on_key_failure="block")
        b.subscribe("booking.*", queue="payments")
        b.subscribe("booking.*", queue="email")
        b.queue("payments").put({"n": 0}, key="k", dedup_id="pay-0")
        with b.queue("payments").get(timeout=0) as d:
            d.dead_letter("declined")  # blocks key k until redriven
        for n in (1, 2, 3):
            b.queue("payments").put({"n": n}, key="k", dedup_id=f"pay-{n}")
        b.queue("email").put({"to": "guest"})

    code, out, err = cli("migrate", str(main), str(pay), "--queue", "payments")
    assert code == 0, err
    assert "verified" in out
    with pmsq.connect(str(pay)) as p:
        assert [q.name for q in p.queues()] == ["payments"]  # only that queue moved
        assert p.bindings() == [("booking.*", "payments")]

    with pmsq.connect(str(main), routes={"payments": str(pay)}) as b:
        q = b.queue("payments")
        assert b.stats("payments").dead == 1
        assert q.get_many(10, timeout=0) == []  # the key is still blocked by its dead letter
        assert q.put({"n": 1}, key="k", dedup_id="pay-1") != ""  # dedup id moved too
        assert b.stats("payments").ready + b.stats("payments").delayed == 3
        assert b.dead_letters("payments").redrive() == 1
        got = []
        while batch := q.get_many(1, timeout=0):
            got.append(batch[0].message.payload["n"])
            batch[0].ack()
        assert got == [0, 1, 2, 3]  # key order kept across the move
        assert b.stats("email").ready == 1  # the rest stayed where it was


def test_migrate_one_queue_refuses_an_unknown_queue(cli: Run, tmp_path: Path) -> None:
    main = tmp_path / "main.db"
    with pmsq.connect(str(main)) as b:
        b.declare_queue("email")
    code, _out, err = cli("migrate", str(main), str(tmp_path / "pay.db"), "--queue", "payments")
    assert code == 1
    assert "no queue 'payments'" in err
    assert "email" in err


@pytest.mark.timeout(120)
def test_the_demo_runs_with_payments_in_their_own_store(cli: Run, tmp_path: Path) -> None:
    day, pay = tmp_path / "day.db", tmp_path / "payments.db"
    code, out, err = cli(
        "demo",
        "--db",
        str(day),
        "--payments-db",
        str(pay),
        "--duration",
        "2",
        "--no-monitor",
        "--seed",
        "4",
    )
    assert code == 0, out + err
    assert "all checks passed" in out
    with pmsq.connect(str(pay)) as p, pmsq.connect(str(day)) as d:
        assert [q.name for q in p.queues()] == ["accounting"]
        assert p.stats("accounting").processed > 0
        assert "accounting" not in {q.name for q in d.queues()}


def test_trace_follows_a_chain_across_the_stores(cli: Run, tmp_path: Path) -> None:
    main, pay = tmp_path / "main.db", tmp_path / "payments.db"
    with pmsq.connect(str(main), routes={"payments.#": str(pay)}) as b:
        b.subscribe("booking.*", queue="payments")
        b.subscribe("booking.*", queue="email")
        email_id, payment_id = b.publish("booking.created", {"n": 1}, key="property:1")
    code, out, err = cli(
        "trace", str(main), "--correlation", email_id, "--route", f"payments.#={pay}"
    )
    assert code == 0, err
    assert email_id in out
    assert payment_id in out  # the copy in the other store is part of the chain
    code, out, err = cli("trace", str(main), "--correlation", email_id)
    assert payment_id not in out  # without the route only main.db is read


def test_doctor_examines_each_routed_store(cli: Run, stores: tuple[Path, Path]) -> None:
    main, pay = stores
    code, out, err = cli("doctor", str(main), "--route", f"payments.#={pay}")
    assert out.count("store ") >= 2
    assert f"store {main}" in out
    assert f"store {pay}" in out
    assert "dead letter" in out  # the payments store's finding is reported
    assert code in (0, 1), err
