"""Django Tasks run by the pmsq backend."""

from __future__ import annotations

from django_tasks import TaskContext, task

from .models import Confirmation


@task()
def record(booking: int, note: str) -> str:
    Confirmation.objects.create(message_id=f"task:{note}", booking_id=booking)
    return note


@task(takes_context=True)
def record_attempt(context: TaskContext, booking: int) -> int:
    Confirmation.objects.create(message_id=f"attempt:{context.attempt}", booking_id=booking)
    return context.attempt
