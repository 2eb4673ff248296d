"""Translate psycopg exceptions into pmsq errors that name the server and what to do.

Errors are classified by SQLSTATE (stable), never by message text.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

from pmsq.errors import BackendUnavailable, OutcomeUnknown, PmsqError, StorageError

__all__ = ["RETRYABLE", "translate"]

# Transactions aborted by these are rolled back entirely and safe to run again.
RETRYABLE = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def translate(
    exc: BaseException, where: str, *, busy_timeout: float, committing: bool = False
) -> PmsqError:
    """Return the pmsq error for ``exc`` raised while using the store ``where``.

    Args:
        exc: The psycopg (or pool) exception.
        where: The store's URL (password masked) and schema, for the message.
        busy_timeout: The configured lock wait, for the message.
        committing: True if ``exc`` came from COMMIT: a lost connection there
            may or may not have committed, so the outcome is unknown.
    """
    store = f"PostgreSQL store {where}"
    if isinstance(exc, PoolTimeout):
        return BackendUnavailable(
            f"no connection to {store} within busy_timeout={busy_timeout}s: the server is "
            "down or every pooled connection is busy; check the server or raise pool_size"
        )
    state = getattr(getattr(exc, "diag", None), "sqlstate", None) or ""
    if committing and (isinstance(exc, psycopg.OperationalError) or state.startswith("08")):
        return OutcomeUnknown(
            f"the connection to {store} failed while committing: the write may or may not be "
            "stored; retry with the same dedup_id to be safe"
        )
    if state == "55P03" or isinstance(exc, psycopg.errors.LockNotAvailable):
        return StorageError(
            f"{store} kept a row locked longer than busy_timeout={busy_timeout}s: another "
            "session holds a long transaction; raise busy_timeout or find that session"
        )
    if state == "53100":
        return StorageError(f"{store} is out of disk space: free space on the server")
    if state in ("42501",):
        return StorageError(f"{store} refused access ({state}): grant the user rights on it")
    if state.startswith("08") or isinstance(exc, psycopg.OperationalError):
        return BackendUnavailable(
            f"{store} cannot be reached ({type(exc).__name__}: {str(exc).strip()}); "
            "check that the server is running and the URL is right"
        )
    return StorageError(f"{store} failed: {state or type(exc).__name__}: {str(exc).strip()}")
