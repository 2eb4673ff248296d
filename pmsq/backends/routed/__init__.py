"""Several stores at once: ``pmsq.connect(url, routes={pattern: url, ...})``.

- ``routes``: :class:`Routes`, which store a queue name routes to.
- ``backend``: :class:`RoutedBackend`, the core verbs sent to each queue's store.
- ``families``: the optional families, forwarded or merged; the class for a
  set of stores (:func:`routed_class`).
- ``watch``: one change token over every store (a watcher per store).

:func:`open_routed` opens the stores and checks that no declared queue was
left behind by a change of routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pmsq.backends.base import Backend
from pmsq.backends.registry import open_backend
from pmsq.backends.routed.backend import RoutedBackend
from pmsq.backends.routed.families import by_queue, merged, routed_class
from pmsq.backends.routed.routes import Routes, parse_routes
from pmsq.errors import ConfigurationError

__all__ = [
    "RoutedBackend",
    "Routes",
    "by_queue",
    "merged",
    "open_routed",
    "parse_routes",
    "routed_class",
    "stranded_queues",
]


def stranded_queues(routes: Routes, stores: list[Backend]) -> list[tuple[str, str, str]]:
    """Queues declared only in a store the routes no longer send them to.

    Returns:
        ``(queue, url where it is declared, url the routes name)`` per such queue.
    """
    out = []
    for index, store in enumerate(stores):
        for config in store.list_queues():
            home = routes.index_for(config.name)
            if home != index and stores[home].queue_config(config.name) is None:
                out.append((config.name, routes.urls[index], routes.urls[home]))
    return out


def open_routed(
    url: str, routes: Mapping[str, str] | None, *, interval: float, **options: Any
) -> Backend:
    """Open every store of ``url`` + ``routes``; one store alone when no route adds one.

    A queue's store is the one its name routes to. Changing the routes under
    a declared queue would hide its messages, so a queue declared only in a
    store the routes no longer send it to is refused here, with the command
    that moves it.

    Args:
        url: The default store (queues no pattern matches).
        routes: Queue-name patterns (topic syntax) to store URLs, tried in order.
        interval: Longest a store's change watcher blocks (the broker's ``poll_interval``).
        **options: Passed to every store's backend (``durability``, ``busy_timeout``...).

    Raises:
        ConfigurationError: a bad pattern or URL, or a queue stranded by the routes.
        StorageError: a store cannot be opened.
    """
    table = parse_routes(url, routes)
    stores: list[Backend] = []
    try:
        for each in table.urls:
            stores.append(open_backend(each, **options))
        if len(stores) == 1:
            return stores[0]
        stranded = stranded_queues(table, stores)
        if stranded:
            listed = "; ".join(f"{q} is in {src}, routes say {dst}" for q, src, dst in stranded)
            first = stranded[0]
            raise ConfigurationError(
                f"the routes send declared queue(s) to another store than theirs ({listed}); "
                f"move each first (pmsq migrate {first[1]} {first[2]} --queue {first[0]}) "
                "or change the routes back"
            )
        cls = routed_class(stores)
        return cls(table, stores, interval=interval)
    except BaseException:
        for store in stores:
            store.close()
        raise
