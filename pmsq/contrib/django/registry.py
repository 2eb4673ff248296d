"""The project's one broker, built from settings on first use, and its handlers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

import pmsq
from pmsq.contrib.django.conf import read_settings, store_url

__all__ = ["broker", "handler", "reset"]

F = TypeVar("F", bound=Callable[..., Any])


@attrs.frozen
class _Registration:
    queue: str
    fn: Callable[..., Any]
    options: dict[str, Any]


_lock = threading.Lock()
_broker: pmsq.Broker | None = None
_url: str | None = None
_registrations: dict[str, _Registration] = {}


def handler(queue: str, **options: Any) -> Callable[[F], F]:
    """Register ``fn`` as the handler of ``queue`` on the project's broker.

    Use it in an installed app's ``pmsq_handlers`` module; it records the
    function without opening the store (``broker()`` applies it), so
    importing the module at startup costs nothing.

    Args:
        queue: The queue to handle.
        **options: ``Broker.handler`` options (``concurrency``, ``timeout``,
            ``tenant_concurrency``).

    Returns:
        A decorator returning the function unchanged.

    Raises:
        ConfigurationError: ``queue`` already has a handler from another function.
    """

    def register(fn: F) -> F:
        with _lock:
            known = _registrations.get(queue)
            if known is not None and _name(known.fn) != _name(fn):
                raise pmsq.ConfigurationError(
                    f"queue {queue!r} already has a handler ({_name(known.fn)}); "
                    f"{_name(fn)} cannot handle it too"
                )
            # A module imported twice (autoreload) registers again: the newest wins.
            _registrations[queue] = _Registration(queue, fn, dict(options))
            if _broker is not None:
                _apply(_broker, _registrations[queue])
        return fn

    return register


def broker() -> pmsq.Broker:
    """The project's broker: opened from ``settings.PMSQ`` on first call, then shared.

    On first call it also imports every installed app's handlers module,
    declares ``QUEUES``, binds ``SUBSCRIPTIONS`` and registers the handlers
    of the pmsq Tasks backends (``TASKS``).

    Returns:
        The broker (thread-safe; one per process).

    Raises:
        ConfigurationError: ``settings.PMSQ`` is missing or invalid.
        StorageError: the store cannot be opened.
    """
    global _broker, _url
    conf = read_settings()
    url = store_url(conf)
    b = _broker
    if b is not None and url == _url:
        return b
    _discover(conf.handlers_module)
    with _lock:
        if _broker is not None:
            if url == _url:
                return _broker
            # The database moved (the test runner switched to the test database).
            _broker.close()
            _broker = None
        b = pmsq.connect(url, **conf.options)
        try:
            for name, kwargs in conf.queues.items():
                b.declare_queue(name, **kwargs)
            for pattern, queues in conf.subscriptions.items():
                for q in queues:
                    b.subscribe(pattern, queue=q)
            for reg in _registrations.values():
                _apply(b, reg)
            _add_task_handlers(b)
        except BaseException:
            b.close()
            raise
        _broker, _url = b, url
        return b


def reset() -> None:
    """Close the project's broker; the next :func:`broker` call opens it again.

    Called when ``settings.PMSQ`` changes (``override_settings`` in tests).
    Registered handlers are kept.
    """
    global _broker
    with _lock:
        b, _broker = _broker, None
    if b is not None:
        b.close()


def _discover(module: str) -> None:
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules(module)


def _apply(b: pmsq.Broker, reg: _Registration) -> None:
    known = b.handlers.get(reg.queue)
    if known is not None and known.fn is reg.fn:
        return
    b.handlers.pop(reg.queue, None)
    b.handler(reg.queue, **reg.options)(reg.fn)


def _task_queues() -> list[str]:
    """The queue names of every pmsq backend in ``settings.TASKS``."""
    from django.conf import settings

    names: set[str] = set()
    for params in getattr(settings, "TASKS", {}).values():
        if params.get("BACKEND") == "pmsq.contrib.django.tasks.PmsqBackend":
            names.update(params.get("QUEUES", ["default"]))
    return sorted(names)


def _add_task_handlers(b: pmsq.Broker) -> None:
    queues = _task_queues()
    if not queues:
        return  # the Tasks framework may not even be installed
    from pmsq.contrib.django.runner import run_task

    for queue in queues:
        if queue in _registrations:
            raise pmsq.ConfigurationError(
                f"queue {queue!r} is a Tasks queue (settings.TASKS) and also has a "
                f"pmsq handler ({_name(_registrations[queue].fn)}); give them different queues"
            )
        if queue not in b.handlers:
            b.handler(queue)(run_task)


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
