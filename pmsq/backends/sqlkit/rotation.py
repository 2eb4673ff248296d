"""Which ready heads one claim takes: priority first, tenants in rotation, rate budgets.

The dialects find the candidate rows (each tenant's first ready key heads,
in delivery order) and lease what :func:`pick` chooses; the choice itself,
the tenant rotation order and the sliding-window rate budget are decided
here, so every SQL backend is fair in the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pmsq.config import RateLimit

__all__ = ["TENANT_WINDOW", "RateBudget", "pick", "rotation_order"]

#: How many tenants one claim considers after the rotation cursor. Bounds
#: claim cost when thousands of tenants have work; rotation reaches the rest
#: on later claims.
TENANT_WINDOW = 32

Row = Mapping[str, Any]


Scan = Callable[[str, bool, int, str | None], list[str]]


def rotation_order(after: str | None, scan: Scan) -> list[str]:
    """Tenants with ready heads in rotation order: those after ``after``, then from the start.

    Args:
        after: The rotation cursor (the tenant served last), or ``None`` to
            start from the first tenant.
        scan: ``scan(start, inclusive, limit, upto)`` returns up to ``limit``
            tenants with ready heads, ascending, from ``start`` (included
            when ``inclusive``); it may stop early at a tenant past ``upto``
            (``None``: no bound), which is not used.

    Returns:
        At most :data:`TENANT_WINDOW` distinct tenants.
    """
    found = scan(after, False, TENANT_WINDOW, None) if after is not None else []
    if len(found) < TENANT_WINDOW:
        # Wrap around: the tenants from the first up to the cursor.
        for t in scan("", True, TENANT_WINDOW - len(found), after):
            if len(found) >= TENANT_WINDOW or (after is not None and t > after):
                break
            found.append(t)
    return found


class RateBudget:
    """Sliding-window log: at most ``limit`` claims in any ``per`` seconds, per scope.

    Args:
        rate: The queue's rate limit.
        used: ``used(scope)`` counts the claims logged for ``scope`` in the
            current window (after dropping older entries).
    """

    def __init__(self, rate: RateLimit, used: Callable[[str], int]) -> None:
        self.rate = rate
        self._used = used
        self._left: dict[str, int] = {}
        #: Scopes of the claims granted, one entry per claim, to be logged.
        self.taken: list[str] = []

    def scope_of(self, row: Row) -> str:
        """The budget a candidate row draws on."""
        if self.rate.scope == "tenant":
            return str(row["tenant"])
        if self.rate.scope == "key":
            # Keys are scoped per tenant: property:1 of two tenants are two keys.
            return f"{row['tenant']}\x1f{row['key'] or ''}"
        return ""

    def take(self, scope: str) -> bool:
        """Spend one claim of ``scope``'s budget; ``False`` if it is used up."""
        if scope not in self._left:
            self._left[scope] = self.rate.limit - self._used(scope)
        if self._left[scope] <= 0:
            return False
        self._left[scope] -= 1
        self.taken.append(scope)
        return True


def pick(
    fronts: Sequence[list[Any]], n: int, rate: RateBudget | None
) -> tuple[list[Any], int | None]:
    """Choose up to ``n`` rows from per-tenant ``fronts`` (each in delivery order).

    Highest priority first; among equal priorities, the next tenant in
    rotation after the last one served. A row whose rate scope is out of
    budget is skipped, and with a tenant or queue scope so is the rest of
    its tenant's front. ``fronts`` are consumed.

    Returns:
        The chosen rows in order, and the index of the tenant served last
        (``None`` if none was).
    """
    picked: list[Any] = []
    pos = 0
    last: int | None = None
    count = len(fronts)
    while len(picked) < n:
        best: int | None = None
        best_i = -1
        for step in range(count):
            i = (pos + step) % count
            if fronts[i] and (best is None or fronts[i][0]["priority"] > best):
                best, best_i = fronts[i][0]["priority"], i
        if best_i < 0:
            break
        row = fronts[best_i].pop(0)
        if rate is not None and not rate.take(rate.scope_of(row)):
            if rate.rate.scope != "key":
                fronts[best_i].clear()  # the whole tenant (or queue) is out of budget
            continue
        picked.append(row)
        last = best_i
        pos = (best_i + 1) % count
    return picked, last
