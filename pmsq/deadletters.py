"""``DeadLetters``: list, redrive and purge one queue's dead letters."""

from __future__ import annotations

from collections.abc import Iterable

from pmsq.envelopes import to_message
from pmsq.errors import ConfigurationError
from pmsq.message import DeadLetter, utc_from_epoch
from pmsq.runtime import Runtime

__all__ = ["DeadLetters"]


def _ids(ids: Iterable[str] | str | None) -> list[str] | None:
    if ids is None:
        return None
    if isinstance(ids, str):
        raise ConfigurationError(f"ids must be a list of message ids, got the string {ids!r}")
    out = list(ids)
    if not all(isinstance(i, str) for i in out):
        raise ConfigurationError(f"message ids must be strings, got {out!r}")
    return out


class DeadLetters:
    """The dead letters of one queue (of one tenant, when scoped)."""

    def __init__(self, runtime: Runtime, queue: str, *, tenant: str | None = None) -> None:
        self._runtime = runtime
        self.queue = queue
        self.tenant = tenant

    def list(
        self, limit: int | None = None, *, ids: Iterable[str] | None = None
    ) -> list[DeadLetter]:
        """Return dead letters, oldest first.

        Args:
            limit: At most this many (``None``: all).
            ids: Only these message ids.
        """
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ConfigurationError(f"limit must be None or an int >= 0, got {limit!r}")
        rows = self._runtime.backend.dead_letters(
            self.queue, tenant=self.tenant, ids=_ids(ids), limit=limit
        )
        return [
            DeadLetter(
                message=to_message(self._runtime.codec, r.envelope, r.attempts, lenient=True),
                reason=r.reason,
                error_type=r.error_type,
                traceback=r.traceback,
                attempts=r.attempts,
                dead_at=utc_from_epoch(r.dead_at),
            )
            for r in rows
        ]

    def redrive(self, ids: Iterable[str] | None = None) -> int:
        """Return dead letters to the queue at attempt 1 (``None``: all); how many moved.

        With ``on_key_failure="block"`` a redriven message goes back to the
        head of its key.
        """
        n = self._runtime.backend.redrive(
            self.queue, _ids(ids), now=self._runtime.clock.time(), tenant=self.tenant
        )
        if n:
            self._runtime.wakeups.notify(self.queue)
        return n

    def purge(self, ids: Iterable[str] | None = None) -> int:
        """Delete dead letters (``None``: all); how many were deleted.

        Purging a dead letter that blocks its key releases the key.
        """
        n = self._runtime.backend.purge(self.queue, _ids(ids), tenant=self.tenant)
        if n:
            self._runtime.wakeups.notify(self.queue)
        return n

    def __len__(self) -> int:
        return len(self.list())
