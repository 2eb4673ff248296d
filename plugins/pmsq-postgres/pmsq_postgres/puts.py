"""Storing messages: dedup, coalescing, quotas and key lines, inside an open transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from pmsq.backends.sqlkit.quotas import check_room
from pmsq.backends.sqlkit.rows import MESSAGE_COLUMNS, tenant_in
from pmsq.backends.sqlkit.states import LIVE, WAITING, waiting_state
from pmsq.backends.types import Envelope
from pmsq.config import QueueConfig
from pmsq_postgres.lines import JOIN_KEY_CTE
from pmsq_postgres.tx import Tx

__all__ = ["COLUMNS", "ConfigReader", "dump_config", "insert_envelopes", "put_many"]

#: The columns read back into an envelope: the kit's, and the expiry this store keeps.
COLUMNS = f"{MESSAGE_COLUMNS}, expires_at"

_RECENT = 1.0

_INSERT_COLUMNS = (
    "id, queue, tenant, key, kpos, priority, state, head, line, available_at, attempt, "
    "enqueued_at, format, payload, headers, dedup_id, topic, correlation_id, causation_id, "
    "expires_at"
)
_INSERT_VALUES = (
    "%(id)s, %(queue)s, %(tenant)s, {key}, {kpos}, %(priority)s, %(state)s, {head}, {line}, "
    "%(available_at)s, %(attempt)s, %(enqueued_at)s, %(format)s, %(payload)s, %(headers)s, "
    "%(dedup_id)s, %(topic)s, %(correlation_id)s, %(causation_id)s, %(expires_at)s"
)
INSERT_UNKEYED = (
    f"INSERT INTO {{s}}.messages ({_INSERT_COLUMNS}) VALUES ("
    + _INSERT_VALUES.format(key="NULL", kpos="NULL", head="true", line="false")
    + ")"
)
# One statement: lock the key's row, take the tail position, insert there.
INSERT_KEYED = (
    JOIN_KEY_CTE
    + f"INSERT INTO {{s}}.messages ({_INSERT_COLUMNS}) SELECT "
    + _INSERT_VALUES.format(key="%(key)s", kpos="k.tail", head="k.live = 1", line="true")
    + " FROM k"
)


class ConfigReader:
    """Reads queue configs inside the current transaction, creating undeclared queues.

    Decoded configs are cached by their stored text. ``recent`` serves puts
    from what this process read within the last second (saving a round trip
    per put); a re-declaration in this process is seen at once
    (:meth:`forget`), one in another process within that second, as with the
    broker's own config cache.
    """

    def __init__(self) -> None:
        self._decoded: dict[str, QueueConfig] = {}
        self._seen: dict[str, tuple[float, QueueConfig]] = {}

    def get(self, tx: Tx, name: str) -> QueueConfig:
        """The stored config of ``name`` (declared with defaults if it is new)."""
        row = tx.one("SELECT config FROM {s}.queues WHERE name = %s", (name,))
        if row is None:
            cfg = QueueConfig(name=name)
            tx.execute(
                "INSERT INTO {s}.queues (name, config) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (name, dump_config(cfg)),
            )
            return cfg
        return self.decode(row[0])

    def recent(self, tx: Tx, name: str) -> QueueConfig:
        """Like :meth:`get`, but from this process's reads of the last second if any."""
        hit = self._seen.get(name)
        if hit is not None and time.monotonic() - hit[0] < _RECENT:
            return hit[1]
        return self.get(tx, name)

    def forget(self, name: str) -> None:
        """Drop ``name`` from the recent reads (it was just re-declared)."""
        self._seen.pop(name, None)

    def decode(self, text: str) -> QueueConfig:
        """Decode a stored config (cached), remembering it as recently read."""
        cached = self._decoded.get(text)
        if cached is None:
            cached = QueueConfig.from_dict(json.loads(text))
            if len(self._decoded) > 1000:
                self._decoded.clear()
                self._seen.clear()
            self._decoded[text] = cached
        self._seen[cached.name] = (time.monotonic(), cached)
        return cached


def dump_config(cfg: QueueConfig) -> str:
    """Stored text of a queue config."""
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _params(env: Envelope, now: float, attempt: int = 0) -> dict[str, Any]:
    return {
        "id": env.id,
        "queue": env.queue,
        "tenant": tenant_in(env.tenant),
        "key": env.key,
        "priority": env.priority,
        "state": waiting_state(env.available_at, now),
        "available_at": env.available_at,
        "attempt": attempt,
        "enqueued_at": env.enqueued_at,
        "format": env.format,
        "payload": env.data,
        "headers": env.headers,
        "dedup_id": env.dedup_id,
        "topic": env.topic,
        "correlation_id": env.correlation_id,
        "causation_id": env.causation_id,
        "expires_at": env.expires_at,
    }


def insert_envelopes(tx: Tx, envelopes: Sequence[Envelope], now: float) -> None:
    """Insert messages at the tail of their keys' lines, pipelined in runs of one kind."""
    run: list[dict[str, Any]] = []
    run_keyed = False
    for env in envelopes:
        keyed = env.key is not None
        if run and keyed != run_keyed:
            tx.many(INSERT_KEYED if run_keyed else INSERT_UNKEYED, run)
            run = []
        run_keyed = keyed
        run.append(_params(env, now))
        tx.notify.add(env.queue)
    if len(run) == 1:
        tx.execute(INSERT_KEYED if run_keyed else INSERT_UNKEYED, run[0])
    elif run:
        tx.many(INSERT_KEYED if run_keyed else INSERT_UNKEYED, run)


def _count_waiting(tx: Tx, queue: str, tenant: str | None, cap: int) -> int:
    # Bounded count: a quota of N never reads more than N index entries.
    if tenant is None:
        row = tx.one(
            "SELECT count(*) FROM (SELECT 1 FROM {s}.messages WHERE queue = %s "
            f"AND state IN {LIVE} LIMIT %s) AS w",
            (queue, cap),
        )
    else:
        row = tx.one(
            "SELECT count(*) FROM (SELECT 1 FROM {s}.messages WHERE queue = %s AND tenant = %s "
            f"AND state IN {LIVE} LIMIT %s) AS w",
            (queue, tenant, cap),
        )
    return int(row[0])


def _check_quota(tx: Tx, cfg: QueueConfig, env: Envelope) -> None:
    if cfg.max_depth is None and (cfg.tenant_quota is None or env.tenant is None):
        return
    # Quota checks count, then insert: serialise puts to this queue so two
    # producers cannot both see room for one more message.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"pmsq-quota:{tx.sql.schema}:{env.queue}",),
    )
    check_room(cfg, env, lambda tenant, cap: _count_waiting(tx, env.queue, tenant, cap))


def _take_dedup(tx: Tx, cfg: QueueConfig, env: Envelope, now: float) -> str | None:
    """Reserve ``env.dedup_id``; return the first message's id if it is taken.

    The reservation is an insert on the dedup key, so of two concurrent puts
    with one id the second waits for the first to commit and then sees it.
    """
    expires = None if cfg.dedup_window is None else env.enqueued_at + cfg.dedup_window
    tenant = tenant_in(env.tenant)
    won = tx.one(
        "INSERT INTO {s}.dedup AS d (queue, tenant, dedup_id, message_id, expires_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (queue, tenant, dedup_id) DO UPDATE SET "
        "message_id = excluded.message_id, expires_at = excluded.expires_at "
        "WHERE d.expires_at IS NOT NULL AND d.expires_at <= %s RETURNING 1",
        (env.queue, tenant, env.dedup_id, env.id, expires, now),
    )
    if won is not None:
        return None
    row = tx.one(
        "SELECT message_id FROM {s}.dedup WHERE queue = %s AND tenant = %s AND dedup_id = %s",
        (env.queue, tenant, env.dedup_id),
    )
    return str(row[0])


def _coalesce(tx: Tx, env: Envelope) -> str | None:
    """Replace the payload of the key's newest undelivered message; its id, or None."""
    tenant = tenant_in(env.tenant)
    # Lock the key's row first: no producer can add behind the message we replace.
    locked = tx.one(
        "SELECT live FROM {s}.keys WHERE queue = %s AND tenant = %s AND key = %s FOR UPDATE",
        (env.queue, tenant, env.key),
    )
    if locked is None or locked[0] == 0:
        return None
    row = tx.one(
        "SELECT seq, id FROM {s}.messages WHERE queue = %s AND tenant = %s AND key = %s "
        "AND line ORDER BY kpos DESC LIMIT 1",
        (env.queue, tenant, env.key),
    )
    if row is None:
        return None
    # Re-checked under the row lock: a consumer may have claimed it meanwhile.
    done = tx.one(
        # The newest payload brings its own expiry (or none).
        "UPDATE {s}.messages SET payload = %s, format = %s, headers = %s, expires_at = %s "
        f"WHERE seq = %s AND state IN {WAITING} AND attempt = 0 RETURNING id",
        (env.data, env.format, env.headers, env.expires_at, row[0]),
    )
    return None if done is None else str(done[0])


def _simple(env: Envelope, cfg: QueueConfig) -> bool:
    return (
        env.dedup_id is None
        and not env.coalesce
        and cfg.max_depth is None
        and (cfg.tenant_quota is None or env.tenant is None)
    )


def put_many(tx: Tx, configs: ConfigReader, envelopes: Sequence[Envelope], now: float) -> list[str]:
    """Store envelopes in the open transaction; return the ids callers see.

    Raises:
        QueueFull: ``max_depth`` or ``tenant_quota`` reached (the caller rolls back).
    """
    cfgs = {q: configs.recent(tx, q) for q in sorted({e.queue for e in envelopes})}
    if all(_simple(e, cfgs[e.queue]) for e in envelopes):
        insert_envelopes(tx, envelopes, now)
        for e in envelopes:
            tx.count(e.queue, tenant_in(e.tenant), put=1)
        return [e.id for e in envelopes]
    ids: list[str] = []
    for env in envelopes:
        cfg = cfgs[env.queue]
        if env.dedup_id is not None:
            first = _take_dedup(tx, cfg, env, now)
            if first is not None:
                ids.append(first)
                continue
        if env.coalesce and env.key is not None:
            replaced = _coalesce(tx, env)
            if replaced is not None:
                if env.dedup_id is not None:
                    tx.execute(
                        "UPDATE {s}.dedup SET message_id = %s WHERE queue = %s AND tenant = %s "
                        "AND dedup_id = %s",
                        (replaced, env.queue, tenant_in(env.tenant), env.dedup_id),
                    )
                ids.append(replaced)
                continue
        _check_quota(tx, cfg, env)
        insert_envelopes(tx, [env], now)
        tx.count(env.queue, tenant_in(env.tenant), put=1)
        ids.append(env.id)
    return ids
