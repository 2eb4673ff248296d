"""One AMQP connection with its channels, used by one thread at a time.

pika's ``BlockingConnection`` is not thread-safe, and delivery tags belong to
the channel that received them, so an ack must go through the very channel
(and connection) of its ``basic_get``. The backend therefore keeps a few
``Link`` objects, each guarded by its own lock, instead of one connection per
thread: a Delivery claimed on one thread is often settled on another.

Publisher confirms are tracked here at the channel level (pika's blocking
channel can only wait for one confirm at a time) so a batch of publishes
waits for its confirms together: one round trip for ``put_many``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pika  # type: ignore[import-untyped]
from pika.adapters.blocking_connection import _IoloopTimerContext  # type: ignore[import-untyped]

from pmsq.errors import BackendUnavailable, OutcomeUnknown, StorageError, Unroutable
from pmsq_rabbitmq.settings import Settings

__all__ = ["AMQP_ERRORS", "Link", "Publish"]

#: Everything pika raises for a broken connection or channel.
AMQP_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)

_PUBLISH_ERRORS: tuple[type[BaseException], ...] = (*AMQP_ERRORS, TimeoutError)

Publish = tuple[str, str, Any, bytes]  # exchange, routing key, properties, body


class _Confirms:
    """Publisher confirms for a batch, on a channel used only for publishing."""

    def __init__(self, conn: Any, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout
        self._channel = conn.channel()
        self._impl = self._channel._impl
        self._next = 1
        self._pending: dict[int, str] = {}
        self._nacked: list[str] = []
        self._returned: list[str] = []
        selected: list[bool] = []
        self._impl.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: selected.append(True)
        )
        self._impl.add_on_return_callback(self._on_return)
        self._wait(lambda: bool(selected))

    @property
    def is_open(self) -> bool:
        return bool(self._impl.is_open)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        done = [t for t in self._pending if t <= tag] if method.multiple else [tag]
        nack = isinstance(method, pika.spec.Basic.Nack)
        for t in done:
            mid = self._pending.pop(t, None)
            if nack and mid is not None:
                self._nacked.append(mid)

    def _on_return(self, _channel: Any, _method: Any, props: Any, _body: bytes) -> None:
        self._returned.append(str(props.message_id))

    def _wait(self, ready: Any) -> None:
        with _IoloopTimerContext(self._timeout, self._conn._impl) as timer:
            self._conn._flush_output(timer.is_ready, ready, lambda: self._impl.is_closed)
        if self._impl.is_closed:
            raise pika.exceptions.ChannelClosed(0, "publisher channel closed")
        if not ready():
            raise TimeoutError(f"no publisher confirm within {self._timeout:g}s")

    def publish(self, items: Sequence[Publish]) -> None:
        """Publish ``items`` (``mandatory``) and wait for every confirm.

        Raises:
            Unroutable: a message reached no queue (its queue does not exist).
            StorageError: the broker refused a message (nack).
            AMQP errors and ``TimeoutError``: the outcome is unknown.
        """
        self._nacked.clear()
        self._returned.clear()
        first = self._next
        for exchange, routing_key, props, body in items:
            self._impl.basic_publish(exchange, routing_key, body, props, mandatory=True)
            self._pending[self._next] = str(props.message_id)
            self._next += 1
        self._wait(lambda: not any(t >= first for t in self._pending))
        if self._returned:
            raise Unroutable(
                f"RabbitMQ routed message(s) {', '.join(self._returned)} to no queue: the "
                "queue's objects are missing on the server (deleted by hand?); declare the "
                "queue again with broker.declare_queue()"
            )
        if self._nacked:
            raise StorageError(
                f"RabbitMQ refused message(s) {', '.join(self._nacked)} (publisher nack: "
                "the queue is over a length limit or the node is out of resources)"
            )


class Link:
    """A connection, its working channel, a spare channel and a confirm channel.

    Callers hold :attr:`lock` while they use it. ``generation`` changes
    whenever the working channel is replaced: delivery tags from an older
    generation are dead (the broker already returned those messages).
    ``connection_id`` changes when the connection is replaced (exclusive
    queues of the old one are gone).
    """

    def __init__(self, settings: Settings, role: str, *, confirm_timeout: float = 30.0) -> None:
        self.lock = threading.RLock()
        self.role = role
        self.generation = 0
        self.connection_id = 0
        self._settings = settings
        self._confirm_timeout = confirm_timeout
        self._conn: Any = None
        self._channel: Any = None
        self._spare: Any = None
        self._confirms: _Confirms | None = None
        self._closed = False

    # -- opening -------------------------------------------------------------------
    def _connection(self) -> Any:
        if self._closed:
            raise StorageError(f"the broker for {self._settings.display} is closed")
        if self._conn is None or not self._conn.is_open:
            self._drop()
            try:
                self._conn = pika.BlockingConnection(self._settings.params)
            except AMQP_ERRORS as exc:
                raise BackendUnavailable(
                    f"cannot reach RabbitMQ at {self._settings.display}: {exc!r}; is the "
                    "server running and the URL (user, password, vhost) right?"
                ) from exc
            self.connection_id += 1
        return self._conn

    def channel(self) -> Any:
        """The working channel (gets, acks, declares), reopened if it was closed."""
        if self._channel is None or not self._channel.is_open or not self._conn.is_open:
            conn = self._connection()
            try:
                self._channel = conn.channel()
            except AMQP_ERRORS as exc:
                self.broken()
                raise BackendUnavailable(f"RabbitMQ at {self._settings.display}: {exc!r}") from exc
            self.generation += 1
        return self._channel

    def spare(self) -> Any:
        """A channel for calls the broker answers by closing it (passive and exclusive declares)."""
        if self._spare is None or not self._spare.is_open or not self._conn.is_open:
            self.channel()
            self._spare = self._conn.channel()
        return self._spare

    def new_channel(self) -> Any:
        """A further channel on the current connection (closed by its user)."""
        self.channel()
        return self._conn.channel()

    def try_spare(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on the spare channel; ``None`` if the broker refused (channel error)."""
        ch = self.spare()
        try:
            return getattr(ch, method)(*args, **kwargs)
        except pika.exceptions.ChannelClosedByBroker:
            self._spare = None
            return None

    def publish(self, items: Sequence[Publish]) -> None:
        """Publish with confirms; see ``_Confirms.publish``.

        Raises:
            BackendUnavailable: the server cannot be reached (nothing was sent).
            OutcomeUnknown: the connection failed after sending.
            Unroutable, StorageError: as ``_Confirms.publish``.
        """
        if not items:
            return
        if self._confirms is None or not self._confirms.is_open or not self._conn.is_open:
            conn = self._connection()
            try:
                self._confirms = _Confirms(conn, self._confirm_timeout)
            except AMQP_ERRORS as exc:
                self.broken()
                raise BackendUnavailable(f"RabbitMQ at {self._settings.display}: {exc!r}") from exc
        try:
            self._confirms.publish(items)
        except _PUBLISH_ERRORS as exc:
            self.broken()
            ids = ", ".join(str(p[2].message_id) for p in items)
            raise OutcomeUnknown(
                f"RabbitMQ at {self._settings.display} failed before confirming message(s) "
                f"{ids}: {exc!r}; they may or may not be stored"
            ) from exc

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold the lock; turn a connection failure into ``BackendUnavailable``."""
        with self.lock:
            try:
                yield
            except AMQP_ERRORS as exc:
                self.broken()
                raise BackendUnavailable(
                    f"lost the connection to RabbitMQ at {self._settings.display}: {exc!r}; "
                    "the call did not complete (try again)"
                ) from exc

    def sync(self) -> None:
        """A round trip on the working channel: proves it alive and earlier acks received."""
        self.channel().basic_qos(prefetch_count=0)

    # -- closing -------------------------------------------------------------------
    def broken(self) -> None:
        """Forget the connection after an error; the next call reconnects."""
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._channel = self._spare = self._confirms = None
        if conn is not None and conn.is_open:
            with contextlib.suppress(*AMQP_ERRORS):
                conn.close()

    def close(self) -> None:
        """Close for good (returns unacked messages, drops exclusive queues). Idempotent."""
        with self.lock:
            self._closed = True
            self._drop()

    @property
    def alive(self) -> bool:
        """Whether the connection is currently open (no I/O)."""
        return self._conn is not None and bool(self._conn.is_open)


def wait_briefly(attempt: int) -> None:
    """Back off a little between retries of a contended operation."""
    time.sleep(min(0.002 * (2**attempt), 0.05))
