"""URL parsing and the names pmsq gives its RabbitMQ objects.

``amqp://user:password@host:port/vhost?shards=4&prefix=pmsq&delay_steps=1,5,30,300``

Options pmsq reads itself (all others go to pika's ``URLParameters``):

- ``prefix``: every queue and exchange pmsq creates is named ``PREFIX:...``
  (default ``pmsq``), so several stores can share a vhost.
- ``shards``: how many shard queues carry the keyed messages of a new queue
  (default 4); fixed per queue once created.
- ``delay_steps``: the TTL ladder, seconds (default ``1,5,30,300``).
- ``meta_ttl``: seconds a process may reuse its copy of the queue
  configurations and bindings (default 1.0).
- ``idle_release``: seconds after its last claim a process gives up the
  shards it owns so another process can take them (default 10).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import attrs
import pika  # type: ignore[import-untyped]

from pmsq.errors import ConfigurationError

__all__ = ["Names", "Settings", "parse_url"]

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,39}$")
DEFAULT_STEPS = (1.0, 5.0, 30.0, 300.0)


@attrs.frozen
class Settings:
    """A parsed ``amqp://`` URL."""

    params: Any
    display: str
    prefix: str = "pmsq"
    shards: int = 4
    delay_steps: tuple[float, ...] = DEFAULT_STEPS
    meta_ttl: float = 1.0
    idle_release: float = 10.0


def _number(name: str, text: str, *, integer: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise ConfigurationError(f"URL option {name}={text!r} is not a number") from None
    if not value > 0 or value > 1e6:
        raise ConfigurationError(f"URL option {name}={text!r} must be > 0")
    return value


def parse_url(url: str, *, busy_timeout: float = 30.0) -> Settings:
    """Split pmsq's own options off an ``amqp://`` / ``amqps://`` URL.

    Raises:
        ConfigurationError: a malformed URL or option.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("amqp", "amqps"):
        raise ConfigurationError(f"not an amqp:// or amqps:// URL: {url!r}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ours = {"prefix", "shards", "delay_steps", "meta_ttl", "idle_release"}
    own = {k: v for k, v in query if k in ours}
    rest = [(k, v) for k, v in query if k not in ours]
    if not any(k == "heartbeat" for k, _ in rest):
        # Calls arrive only when the app claims or puts; heartbeats would need a
        # thread pumping the connection, so rely on TCP to notice a dead peer.
        rest.append(("heartbeat", "0"))
    if not any(k == "blocked_connection_timeout" for k, _ in rest):
        rest.append(("blocked_connection_timeout", str(float(busy_timeout) or 30.0)))
    clean = parts._replace(query=urllib.parse.urlencode(rest))
    try:
        params = pika.URLParameters(urllib.parse.urlunsplit(clean))
    except Exception as exc:  # pika raises plain ValueError/TypeError subclasses
        raise ConfigurationError(f"invalid RabbitMQ URL {url!r}: {exc}") from exc
    host = parts.hostname or "localhost"
    port = parts.port or (5671 if parts.scheme.lower() == "amqps" else 5672)
    display = f"{parts.scheme}://{host}:{port}{parts.path or '/'}"
    prefix = own.get("prefix", "pmsq")
    if not _PREFIX_RE.match(prefix):
        raise ConfigurationError(
            f"URL option prefix={prefix!r}: use 1-40 characters from A-Z a-z 0-9 _ . -"
        )
    steps: tuple[float, ...] = DEFAULT_STEPS
    if "delay_steps" in own:
        steps = tuple(
            sorted({_number("delay_steps", s) for s in own["delay_steps"].split(",") if s})
        )
        if not steps:
            raise ConfigurationError("URL option delay_steps needs at least one step")
    return Settings(
        params=params,
        display=display,
        prefix=prefix,
        shards=int(_number("shards", own.get("shards", "4"), integer=True)),
        delay_steps=steps,
        meta_ttl=_number("meta_ttl", own.get("meta_ttl", "1.0")),
        idle_release=_number("idle_release", own.get("idle_release", "10")),
    )


class Names:
    """RabbitMQ names of one store's objects. ``:`` never occurs in a pmsq queue name,
    so ``PREFIX:QUEUE:...`` can never collide between two pmsq queues."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.meta = f"{prefix}:meta"
        self.meta_init = f"{prefix}:meta:initialised"
        self.meta_mutex = f"{prefix}:meta:init-mutex"

    def main(self, queue: str) -> str:
        """Unkeyed messages that are due."""
        return f"{self.prefix}:{queue}"

    def shard(self, queue: str, index: int) -> str:
        """Keyed messages of shard ``index``."""
        return f"{self.prefix}:{queue}:s{index}"

    def shard_lock(self, queue: str, index: int) -> str:
        """The empty queue whose exclusive consumer owns shard ``index``."""
        return f"{self.prefix}:{queue}:s{index}:owner"

    def hash_exchange(self, queue: str) -> str:
        """The consistent-hash exchange spreading keys over the shards."""
        return f"{self.prefix}:{queue}:keys"

    def dlx(self, queue: str) -> str:
        """The dead-letter exchange (fanout to :meth:`dead`)."""
        return f"{self.prefix}:{queue}:dlx"

    def dead(self, queue: str) -> str:
        """Dead letters."""
        return f"{self.prefix}:{queue}:dead"

    def delay(self, queue: str, step: float) -> str:
        """The TTL queue of one delay step; it dead-letters back to :meth:`main`."""
        return f"{self.prefix}:{queue}:delay:{step:g}s"
