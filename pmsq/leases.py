"""Leasing: claim messages from the store and hand them out as ``Delivery`` values.

``Queue.get_many`` and the workers' claim rounds both come here, straight to
the store through the broker's ``Runtime``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pmsq.backends.base import Claimed
from pmsq.delivery import Delivery
from pmsq.envelopes import to_message
from pmsq.errors import ConfigurationError
from pmsq.policy import describe_error
from pmsq.runtime import Runtime

__all__ = ["get_many", "lease"]


def lease(runtime: Runtime, claimed: Sequence[Claimed]) -> list[Delivery]:
    """Wrap claimed messages in deliveries; dead-letter those whose body cannot be decoded.

    An undecodable body can never succeed, so it goes to the dead letters at
    once (reason ``payload cannot be decoded: ...``) and the rest keep flowing.
    """
    out = []
    for c in claimed:
        config = runtime.queue_config(c.envelope.queue)
        try:
            message = to_message(runtime.codec, c.envelope, c.attempt)
        except Exception as exc:
            error_type, text = describe_error(exc)
            runtime.backend.dead_letter(
                c.receipt,
                now=runtime.clock.time(),
                reason=f"payload cannot be decoded: {exc}",
                error_type=error_type,
                traceback=text,
                duration_ms=None,
            )
            continue
        out.append(Delivery(runtime, c, message, config))
    return out


def get_many(
    runtime: Runtime,
    queue: str,
    n: int,
    timeout: float | None,
    *,
    tenant: str | None = None,
    consumer: str | None = None,
) -> list[Delivery]:
    """Lease up to ``n`` messages of ``queue``, waiting up to ``timeout`` for the first.

    Args:
        runtime: The broker's shared state.
        queue: Queue name (already validated).
        n: At most this many.
        timeout: Seconds to wait (``0``: look once; ``None``: forever).
        tenant: Only this tenant's messages.
        consumer: The worker id the journal records with each claim.

    Returns:
        A possibly empty list of deliveries.

    Raises:
        ConfigurationError: ``n`` or ``timeout`` is invalid.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigurationError(f"get_many takes n >= 1, got {n!r}")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ConfigurationError(f"timeout must be seconds >= 0 or None, got {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        claimed = runtime.claim(queue, n, tenant=tenant, consumer=consumer)
        if claimed:
            deliveries = lease(runtime, claimed)
            if deliveries:
                return deliveries
            # All were undecodable and are dead letters now: look again at once.
            continue
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return []
        runtime.wakeups.wait(queue, remaining)
