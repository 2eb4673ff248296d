"""A backend for Django's Tasks framework: ``task.enqueue()`` puts a pmsq message.

::

    TASKS = {"default": {"BACKEND": "pmsq.contrib.django.tasks.PmsqBackend",
                         "QUEUES": ["default"]}}

Each Tasks queue is a pmsq queue of the same name; ``manage.py pmsq_worker``
runs the tasks it holds. With ``PMSQ["DATABASE"]`` set, ``enqueue`` inside
``transaction.atomic`` writes the message in that transaction (it commits,
or vanishes, with the app's rows); without it the message is stored at once.
A task that raises is retried with the queue's backoff and dead-lettered
after ``max_attempts`` (``PMSQ["QUEUES"]``); one whose function can no longer
be imported is dead-lettered at once. Results are not stored
(``supports_get_result = False``): a task's effects are its result.

Django 6 ships the framework as ``django.tasks``; older versions use its
backport, the ``django-tasks`` package (``pip install 'pmsq[django]'``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import traceback
from typing import Any

from pmsq.errors import ConfigurationError
from pmsq.message import Message

__all__ = ["PmsqBackend", "run_task"]

log = logging.getLogger("pmsq.contrib.django.tasks")


def _api(name: str) -> Any:
    """``django.tasks.<name>`` (Django 6) or the backport's ``django_tasks.<name>``."""
    try:
        return importlib.import_module(f"django.tasks{name}")
    except ImportError:
        try:
            return importlib.import_module(f"django_tasks{name}")
        except ImportError:
            raise ConfigurationError(
                "Django's Tasks framework is missing: use Django 6, or install the "
                "backport for older versions: pip install django-tasks"
            ) from None


BaseTaskBackend: Any = _api(".backends.base").BaseTaskBackend


class PmsqBackend(BaseTaskBackend):
    """Django Tasks backend storing each enqueued task as a pmsq message.

    Args:
        alias: The backend's name in ``settings.TASKS``.
        params: Its settings (``QUEUES``: the queue names tasks may use,
            default ``["default"]``).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = False
    supports_priority = True

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Put ``task(*args, **kwargs)`` on the pmsq queue named ``task.queue_name``.

        Args:
            task: The ``Task``.
            args: Positional arguments (JSON values).
            kwargs: Keyword arguments (JSON values).

        Returns:
            A ``TaskResult`` in status ``READY`` whose ``id`` is the message id.

        Raises:
            InvalidTaskError: the task is not valid for this backend.
            ConfigurationError: ``settings.PMSQ`` is missing or invalid.
            SerializationError: an argument is not a JSON value.
            StorageError: the store failed.
        """
        from django.db import connections

        from pmsq.contrib.django.conf import read_settings
        from pmsq.contrib.django.registry import broker

        self.validate_task(task)
        base = _api(".base")
        conf = read_settings()
        payload = {
            "task": f"{task.func.__module__}.{task.func.__qualname__}",
            "args": list(args),
            "kwargs": dict(kwargs),
            "backend": self.alias,
        }
        connection = connections[conf.database] if conf.database is not None else None
        message_id = (
            broker()
            .queue(task.queue_name)
            .put(
                payload,
                priority=task.priority,
                not_before=task.run_after,
                connection=connection,
            )
        )
        result = base.TaskResult(
            task=task,
            id=message_id,
            status=base.TaskResultStatus.READY,
            enqueued_at=dt.datetime.now(dt.UTC),
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=payload["args"],
            kwargs=payload["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        _api(".signals").task_enqueued.send(type(self), task_result=result)
        return result


def run_task(message: Message) -> Any:
    """The pmsq handler of a Tasks queue: import the task and call it.

    Sends the framework's ``task_started`` and ``task_finished`` signals.

    Args:
        message: The message ``PmsqBackend.enqueue`` stored.

    Returns:
        What the task returned.

    Raises:
        Reject: the payload names no importable task (dead-lettered at once).
        Exception: whatever the task raised (retried with the queue's backoff).
    """
    import pmsq

    base = _api(".base")
    signals = _api(".signals")
    payload = message.payload
    try:
        from django.utils.module_loading import import_string

        task = import_string(payload["task"])
    except (ImportError, KeyError, TypeError) as exc:
        raise pmsq.Reject(f"not a runnable task message: {exc}") from exc
    if not isinstance(task, base.Task):
        raise pmsq.Reject(f"{payload['task']} is not a task (decorate it with @task)")
    now = dt.datetime.now(dt.UTC)
    result = base.TaskResult(
        task=task,
        id=message.id,
        status=base.TaskResultStatus.RUNNING,
        enqueued_at=message.enqueued_at,
        started_at=now,
        last_attempted_at=now,
        finished_at=None,
        args=payload["args"],
        kwargs=payload["kwargs"],
        backend=payload.get("backend", "default"),
        errors=[],
        # One entry per delivery, so TaskContext.attempt counts like message.attempt.
        worker_ids=[message.queue] * message.attempt,
    )
    backend_cls = type(task.get_backend())
    signals.task_started.send(sender=backend_cls, task_result=result)
    try:
        if task.takes_context:
            value = task.call(base.TaskContext(task_result=result), *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
    except BaseException as exc:
        object.__setattr__(result, "status", base.TaskResultStatus.FAILED)
        object.__setattr__(result, "finished_at", dt.datetime.now(dt.UTC))
        result.errors.append(
            base.TaskError(
                exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
                traceback="".join(traceback.format_exception(exc)),
            )
        )
        signals.task_finished.send(sender=backend_cls, task_result=result)
        raise
    object.__setattr__(result, "status", base.TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "finished_at", dt.datetime.now(dt.UTC))
    object.__setattr__(result, "_return_value", value)
    signals.task_finished.send(sender=backend_cls, task_result=result)
    return value
