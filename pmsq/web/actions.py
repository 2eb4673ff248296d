"""What an operator may change from the dashboard, each change journaled with who did it.

Every action goes through a tenant handle when the operator's token is a
tenant's, so it cannot reach another tenant's messages. After the change,
one ``operator`` event per message id named (or one for the whole queue,
``message_id`` empty) records the action, who asked and from where, in the
store's journal when its backend keeps one (``pmsq trace ID`` shows it), and
always in the ``pmsq.web`` log.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from pmsq.backends.families import History
from pmsq.backends.types import HistoryEvent
from pmsq.errors import ConfigurationError
from pmsq.web.access import Principal

if TYPE_CHECKING:
    from pmsq.broker import Broker

__all__ = ["OPERATOR_EVENT", "Action", "perform"]

log = logging.getLogger("pmsq.web")

#: The journal's event name for an operator's action.
OPERATOR_EVENT = "operator"
#: Ids one action may name (a form of checkboxes stays far below).
MAX_IDS = 1000
_VERBS = ("redrive", "purge", "cancel", "pause", "resume")


@attrs.frozen
class Action:
    """One requested change, already parsed from a form.

    Attributes:
        verb: ``redrive``, ``purge``, ``cancel``, ``pause`` or ``resume``.
        queue: The queue it acts on.
        ids: Message ids (``None``: every dead letter, for redrive and purge).
        tenant: ``tenant=`` of a pause, resume or key cancel.
        key: ``key=`` of a pause, resume or key cancel.
        until: When a pause ends by itself (epoch seconds), or ``None``.
        reason: Why (pauses).
    """

    verb: str
    queue: str
    ids: tuple[str, ...] | None = None
    tenant: str | None = None
    key: str | None = None
    until: float | None = None
    reason: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.verb not in _VERBS:
            raise ConfigurationError(f"unknown action {self.verb!r}; actions: {', '.join(_VERBS)}")
        if self.ids is not None:
            if len(self.ids) > MAX_IDS:
                raise ConfigurationError(f"at most {MAX_IDS} message ids per action")
            if any(not i or len(i) > 200 for i in self.ids):
                raise ConfigurationError("message ids are 1 to 200 characters")

    def describe(self) -> str:
        """``redrive 3 of email``: the action in a few words, for logs and messages."""
        what = "all" if self.ids is None else ", ".join(self.ids[:3])
        if self.ids is not None and len(self.ids) > 3:
            what += f" (+{len(self.ids) - 3})"
        if self.verb in ("pause", "resume") or (self.verb == "cancel" and self.key is not None):
            what = (
                ", ".join(f"{k} {v}" for k, v in (("tenant", self.tenant), ("key", self.key)) if v)
                or "whole queue"
            )
        return f"{self.verb} {self.queue}: {what}"


def _scoped(action: Action, principal: Principal) -> Action:
    """The action as ``principal`` may do it: a tenant's token acts only on its tenant."""
    if principal.tenant is None:
        return action
    if action.tenant not in (None, principal.tenant):
        raise PermissionError(
            f"this token is limited to tenant {principal.tenant!r}; it cannot act on "
            f"tenant {action.tenant!r}"
        )
    return attrs.evolve(action, tenant=principal.tenant)


def _apply(broker: Broker, action: Action) -> int:
    # Through a tenant handle whenever a tenant is named (always, for a tenant's
    # token: _scoped forced it), so ids of other tenants' messages match nothing.
    scope: Any = broker if action.tenant is None else broker.tenant(action.tenant)
    ids = None if action.ids is None else list(action.ids)
    if action.verb == "redrive":
        return int(scope.dead_letters(action.queue).redrive(ids))
    if action.verb == "purge":
        return int(scope.dead_letters(action.queue).purge(ids))
    if action.verb == "cancel":
        queue = scope.queue(action.queue)
        if action.key is not None:
            return int(queue.cancel(key=action.key))
        if not ids:
            raise ConfigurationError("cancel needs message ids or a key")
        return sum(1 for i in ids if queue.cancel(i))
    # Pauses are stored per (queue, tenant, key) on the broker, not on tenant handles.
    options = {"tenant": action.tenant, "key": action.key}
    if action.verb == "pause":
        broker.pause(action.queue, until=action.until, reason=action.reason or "", **options)
        return 1
    return int(bool(broker.resume(action.queue, **options)))


def perform(broker: Broker, action: Action, principal: Principal, *, client: str) -> int:
    """Do ``action`` for ``principal`` and journal it; return how many things changed.

    Args:
        broker: The broker.
        action: The parsed action.
        principal: Who asks (their token was checked).
        client: Where the request came from (an address), for the journal.

    Returns:
        Messages redriven, purged or cancelled; pauses set or lifted.

    Raises:
        PermissionError: a tenant's token names another tenant.
        ConfigurationError: the action is invalid for this queue or pmsq.
    """
    action = _scoped(action, principal)
    count = _apply(broker, action)
    log.info("%s by %s from %s: %d changed", action.describe(), principal.who, client, count)
    _journal(broker, action, principal, client, count)
    return count


def _journal(broker: Broker, action: Action, principal: Principal, client: str, count: int) -> None:
    backend = broker.backend
    if not isinstance(backend, History):
        return
    detail: dict[str, Any] = {
        "action": action.verb,
        "by": principal.who,
        "via": f"web from {client}",
        "count": count,
    }
    for name in ("key", "reason"):
        if getattr(action, name) is not None:
            detail[name] = getattr(action, name)
    if action.until is not None:
        detail["until"] = dt.datetime.fromtimestamp(action.until, dt.UTC).isoformat()
    ids: Sequence[str] = action.ids if action.ids else ("",)
    now = broker.clock.time()
    backend.record(
        [
            HistoryEvent(
                at=now,
                message_id=i,
                queue=action.queue,
                tenant=action.tenant,
                key=action.key,
                correlation_id=None,
                event=OPERATOR_EVENT,
                attempt=None,
                worker=None,
                process=None,
                detail=detail,
            )
            for i in ids
        ]
    )
