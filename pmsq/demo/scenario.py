"""The PMS day: management companies, their properties, and a stream of events.

``Day.next_event`` draws the next event from the state of the world so every
stream makes sense (a cancellation names a live booking, a payment an
existing one). It is pure apart from its injected random source, so a seed
replays the same day.
"""

from __future__ import annotations

import random
from typing import Any

import attrs

__all__ = ["TENANTS", "Day", "Event"]

#: Management companies sharing the deployment, and how many properties each runs.
TENANTS: dict[str, int] = {
    "alpine-lodges": 14,
    "baltic-stays": 22,
    "coastal-cottages": 30,
    "downtown-lofts": 18,
}

_GUEST_LINES = (
    "What time is check-in?",
    "Is there parking nearby?",
    "Can we bring our dog?",
    "The wifi password does not work.",
    "Could we get extra towels?",
    "Running late, arriving around 11pm.",
)


@attrs.frozen
class Event:
    """One event to publish: topic, owner, property and payload."""

    topic: str
    tenant: str
    prop: int
    payload: dict[str, Any]


class Day:
    """Generates a plausible sequence of PMS events for all tenants.

    Args:
        rng: Random source (seeded for a reproducible day).
        tenants: Company name -> number of properties.
    """

    def __init__(self, rng: random.Random, tenants: dict[str, int] | None = None) -> None:
        self.rng = rng
        self.tenants = dict(tenants or TENANTS)
        self._next_booking = 1000
        # (tenant, property) -> live bookings; every booking ever made, for payments.
        self._live: dict[tuple[str, int], list[int]] = {}
        self._all: dict[tuple[str, int], list[int]] = {}

    def _place(self, tenant: str | None = None) -> tuple[str, int]:
        if tenant is None:
            names = list(self.tenants)
            tenant = self.rng.choices(names, weights=list(self.tenants.values()))[0]
        return tenant, self.rng.randrange(1, self.tenants[tenant] + 1)

    def next_event(self, tenant: str | None = None) -> Event:
        """The next event of the day (of ``tenant``'s properties, if given)."""
        tenant, prop = self._place(tenant)
        live = self._live.setdefault((tenant, prop), [])
        made = self._all.setdefault((tenant, prop), [])
        roll = self.rng.random()
        if not made or roll < 0.35:
            self._next_booking += 1
            booking = self._next_booking
            live.append(booking)
            made.append(booking)
            return Event(
                "booking.created",
                tenant,
                prop,
                {
                    "booking_id": booking,
                    "start": self.rng.randrange(0, 60),
                    "nights": self.rng.randrange(1, 8),
                    "guest": f"guest-{booking}",
                },
            )
        if live and roll < 0.50:
            return Event(
                "booking.modified",
                tenant,
                prop,
                {
                    "booking_id": self.rng.choice(live),
                    "start": self.rng.randrange(0, 60),
                    "nights": self.rng.randrange(1, 8),
                },
            )
        if live and roll < 0.60:
            booking = self.rng.choice(live)
            live.remove(booking)
            return Event("booking.cancelled", tenant, prop, {"booking_id": booking})
        if roll < 0.85:
            return Event(
                "payment.received",
                tenant,
                prop,
                {
                    "booking_id": self.rng.choice(made),
                    "amount": round(self.rng.uniform(80, 1200), 2),
                    "currency": "EUR",
                },
            )
        return Event(
            "guest.message",
            tenant,
            prop,
            {"booking_id": self.rng.choice(made), "text": self.rng.choice(_GUEST_LINES)},
        )

    def poison(self) -> Event:
        """A guest message no template can render: it fails on every attempt."""
        tenant, prop = self._place()
        made = self._all.setdefault((tenant, prop), [])
        booking = made[0] if made else 0
        return Event(
            "guest.message", tenant, prop, {"booking_id": booking, "text": None, "poison": True}
        )
