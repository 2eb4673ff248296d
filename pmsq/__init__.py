"""pmsq: durable, ordered message queues embedded in your app.

``pmsq.connect("sqlite:///pms.db")`` returns a ``Broker``; see DESIGN in the docs.
"""

from pmsq.alerts import Alert, AlertRule
from pmsq.backends.base import Backend, Capabilities
from pmsq.broker import Broker, connect
from pmsq.clock import Clock, ManualClock, SystemClock
from pmsq.codec import Codec, JsonCodec
from pmsq.config import Backoff, Circuit, QueueConfig, RateLimit
from pmsq.control import Pause
from pmsq.deadletters import DeadLetters
from pmsq.delivery import Delivery
from pmsq.errors import (
    BackendUnavailable,
    ConfigurationError,
    Empty,
    HandlerSignal,
    LeaseLost,
    OutcomeUnknown,
    PayloadTooLarge,
    PmsqError,
    QueueFull,
    Reject,
    Retry,
    SerializationError,
    Snooze,
    StorageError,
    Unroutable,
)
from pmsq.handlers import HandlerSpec
from pmsq.message import DeadLetter, Message, NewMessage
from pmsq.queue import Queue
from pmsq.schedules import Schedule
from pmsq.stats import QueueStats, Stats
from pmsq.tenant import TenantHandle
from pmsq.worker import AsyncWorker, Middleware, Worker

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlertRule",
    "AsyncWorker",
    "Backend",
    "BackendUnavailable",
    "Backoff",
    "Broker",
    "Capabilities",
    "Circuit",
    "Clock",
    "Codec",
    "ConfigurationError",
    "DeadLetter",
    "DeadLetters",
    "Delivery",
    "Empty",
    "HandlerSignal",
    "HandlerSpec",
    "JsonCodec",
    "LeaseLost",
    "ManualClock",
    "Message",
    "Middleware",
    "NewMessage",
    "OutcomeUnknown",
    "Pause",
    "PayloadTooLarge",
    "PmsqError",
    "Queue",
    "QueueConfig",
    "QueueFull",
    "QueueStats",
    "RateLimit",
    "Reject",
    "Retry",
    "Schedule",
    "SerializationError",
    "Snooze",
    "Stats",
    "StorageError",
    "SystemClock",
    "TenantHandle",
    "Unroutable",
    "Worker",
    "__version__",
    "connect",
]
