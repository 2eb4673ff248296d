"""pmsq on RabbitMQ: ``pmsq.connect("amqp://guest:guest@localhost:5672/")``.

Installing this package registers the ``amqp`` and ``amqps`` URL schemes
with pmsq. See ``docs/rabbitmq.md`` for what differs from the SQLite backend.
"""

from __future__ import annotations

from pmsq_rabbitmq.backend import CAPABILITIES, RabbitMQBackend

__all__ = ["CAPABILITIES", "RabbitMQBackend"]
