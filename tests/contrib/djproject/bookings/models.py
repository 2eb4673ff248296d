from __future__ import annotations

from django.db import models


class Booking(models.Model):
    guest = models.CharField(max_length=80)

    class Meta:
        app_label = "bookings"


class Confirmation(models.Model):
    """One row per booking.created message handled (the handler's effect)."""

    message_id = models.CharField(max_length=40)
    booking_id = models.IntegerField()

    class Meta:
        app_label = "bookings"
