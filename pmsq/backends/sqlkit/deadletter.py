"""What dead-lettering means, apart from the SQL that does it.

Why a message died (the reasons and error types the store records for
expired leases and damaged payloads), whether its dead letter keeps its
key's line, and the copy sent to a queue's ``fallback``.
"""

from __future__ import annotations

import json
from typing import Any

from pmsq.backends.sqlkit.rows import tenant_out
from pmsq.backends.types import Envelope
from pmsq.config import QueueConfig

__all__ = [
    "CORRUPT_PAYLOAD",
    "CORRUPT_REASON",
    "EXPIRED_REASON",
    "EXPIRED_TYPE",
    "LEASE_EXPIRED",
    "blocks_key",
    "expired_error",
    "expired_reason",
    "fallback_copy",
]

#: Error type recorded when a lease runs out (a killed or hung worker).
LEASE_EXPIRED = "pmsq.LeaseExpired"
#: Error type and reason of a message whose stored bytes fail their checksum.
CORRUPT_PAYLOAD = "pmsq.CorruptPayload"
CORRUPT_REASON = "payload checksum mismatch: the stored bytes are damaged"
#: Reason and error type of a message found past its ``expires_at`` when it
#: would have been delivered (DESIGN.md: reason ``expired``, type ``"Expired"``).
EXPIRED_REASON = "expired"
EXPIRED_TYPE = "Expired"


def expired_reason(attempt: int, max_attempts: int) -> str:
    """Dead-letter reason of a message whose last allowed lease ran out."""
    return f"lease expired on attempt {attempt} of {max_attempts}"


def expired_error(attempt: int) -> str:
    """Error text recorded on a message whose lease ran out and that will be retried."""
    return f"lease expired on attempt {attempt}"


def blocks_key(cfg: QueueConfig, key: str | None, error_type: str | None = None) -> bool:
    """Whether a dead letter of ``cfg``'s queue keeps its key's line (blocking the key).

    An expired message (``error_type`` :data:`EXPIRED_TYPE`) never does: expiry
    is no failure of the key, and its later messages are still wanted.
    """
    return cfg.on_key_failure == "block" and key is not None and error_type != EXPIRED_TYPE


def fallback_copy(
    cfg: QueueConfig,
    *,
    id: str,
    message_id: str,
    reason: str,
    payload: Any,
    format: str,
    key: str | None,
    tenant: str,
    priority: int,
    headers: str | None,
    topic: str | None,
    correlation_id: str | None,
    now: float,
) -> Envelope:
    """The copy of dead letter ``message_id`` put on ``cfg.fallback`` as message ``id``.

    It carries the original's payload, key, tenant and chain, and a
    ``pmsq.dead_letter`` header naming where it came from and why.
    """
    assert cfg.fallback is not None
    extra: dict[str, Any] = json.loads(headers) if headers else {}
    extra["pmsq.dead_letter"] = {"queue": cfg.name, "message_id": message_id, "reason": reason}
    return Envelope(
        id=id,
        queue=cfg.fallback,
        data=bytes(payload),
        format=format,
        key=key,
        tenant=tenant_out(tenant),
        priority=priority,
        available_at=now,
        enqueued_at=now,
        headers=json.dumps(extra, separators=(",", ":")),
        dedup_id=None,
        topic=topic,
        correlation_id=correlation_id,
        causation_id=message_id,
    )
