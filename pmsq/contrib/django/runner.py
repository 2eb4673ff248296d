"""Running a Django task that ``PmsqBackend`` stored: the handler of every Tasks queue.

Apart from ``tasks.py`` so that the handler registry can import it without
importing the backend (which reads the registry's broker).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import traceback
from typing import Any

from pmsq.errors import ConfigurationError
from pmsq.message import Message

__all__ = ["api", "run_task"]

log = logging.getLogger("pmsq.contrib.django.tasks")


def api(name: str) -> Any:
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

    base = api(".base")
    signals = api(".signals")
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
