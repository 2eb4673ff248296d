"""The app's pmsq handlers, found by pmsq.contrib.django in every installed app."""

from __future__ import annotations

import os
import time

from django.db import connection, transaction

import pmsq
from pmsq.contrib.django import broker, handler

from .models import Confirmation


@handler("confirmations")
def confirm(message: pmsq.Message) -> None:
    # Slow enough that a SIGTERM in the tests lands while some are in flight.
    time.sleep(float(os.environ.get("PMSQ_TEST_HANDLER_DELAY", "0")))
    with transaction.atomic(), broker().once(message, connection=connection) as first:
        if first:
            Confirmation.objects.create(
                message_id=message.id, booking_id=message.payload["booking"]
            )
