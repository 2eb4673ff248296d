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
import logging
from typing import Any

from pmsq.contrib.django.runner import api, run_task

__all__ = ["PmsqBackend", "run_task"]

log = logging.getLogger("pmsq.contrib.django.tasks")


BaseTaskBackend: Any = api(".backends.base").BaseTaskBackend


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
        base = api(".base")
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
        api(".signals").task_enqueued.send(type(self), task_result=result)
        return result
