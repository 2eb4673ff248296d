"""Queue depth and tenant quotas: when a put is refused, and how it says so."""

from __future__ import annotations

from collections.abc import Callable

from pmsq.backends.types import Envelope
from pmsq.config import QueueConfig
from pmsq.errors import QueueFull

__all__ = ["check_room"]


def check_room(cfg: QueueConfig, env: Envelope, waiting: Callable[[str | None, int], int]) -> None:
    """Refuse ``env`` if its queue is at ``max_depth`` or its tenant at ``tenant_quota``.

    Args:
        cfg: The queue's config.
        env: The message about to be stored.
        waiting: ``waiting(tenant, cap)`` counts the messages waiting or in
            flight in the queue (of ``tenant`` only, unless ``None``),
            reading no more than ``cap`` of them.

    Raises:
        QueueFull: a limit is reached (nothing is written).
    """
    if cfg.max_depth is not None and waiting(None, cfg.max_depth) >= cfg.max_depth:
        raise QueueFull(
            f"queue {env.queue!r} is full (max_depth={cfg.max_depth}); "
            "wait for consumers or raise max_depth"
        )
    if (
        cfg.tenant_quota is not None
        and env.tenant is not None
        and waiting(env.tenant, cfg.tenant_quota) >= cfg.tenant_quota
    ):
        raise QueueFull(
            f"tenant {env.tenant!r} has {cfg.tenant_quota} messages waiting in queue "
            f"{env.queue!r} (tenant_quota={cfg.tenant_quota})"
        )
