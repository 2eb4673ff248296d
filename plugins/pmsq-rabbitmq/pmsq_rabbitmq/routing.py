"""Where a message goes: a queue's main queue, a delay step, or its key's shard."""

from __future__ import annotations

import attrs

from pmsq.backends.base import Envelope
from pmsq.config import QueueConfig
from pmsq_rabbitmq.settings import Names
from pmsq_rabbitmq.wire import key_route

__all__ = ["DUE_SLACK", "MAX_KEYED_HOLD", "QueueInfo", "route", "step_for"]

#: A message due within this many seconds counts as due (clock jitter between processes).
DUE_SLACK = 0.05
#: Longest a keyed message may be held back in its shard. The broker closes a
#: channel holding an unacked delivery past ``consumer_timeout`` (30 min by
#: default), so pmsq keeps well below it.
MAX_KEYED_HOLD = 900.0


@attrs.frozen
class QueueInfo:
    """A queue's configuration and the fixed shape of its RabbitMQ objects."""

    config: QueueConfig
    shards: int
    delivery_limit: int
    steps: tuple[float, ...]


def step_for(delay: float, steps: tuple[float, ...]) -> float:
    """The smallest delay step that is at least ``delay`` (the largest step if none is).

    A message longer than the largest step comes back early and is sent
    round the ladder again by the next claim, so the delay is always rounded up.
    """
    for step in steps:
        if step >= delay:
            return step
    return steps[-1]


def route(names: Names, env: Envelope, info: QueueInfo, now: float) -> tuple[str, str]:
    """``(exchange, routing key)`` for ``env``.

    Keyed messages always go to their shard, even when delayed: the shard's
    consumer holds a not-yet-due message back, which also holds back the
    messages behind it, as per-key order requires.
    """
    queue = env.queue
    if env.key is not None:
        return names.hash_exchange(queue), key_route(env.tenant, env.key)
    if env.available_at > now + DUE_SLACK:
        return "", names.delay(queue, step_for(env.available_at - now, info.steps))
    return "", names.main(queue)
