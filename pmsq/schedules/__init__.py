"""Recurring schedules without a scheduler process (DESIGN.md, "Schedules").

- :mod:`pmsq.schedules.slots`: pure time logic (cron in a zone across DST,
  ``every=`` periods, catch-up policies).
- :mod:`pmsq.schedules.service`: what ``Broker.schedule``, ``schedules``,
  ``unschedule`` and ``run_schedules`` do.
- :mod:`pmsq.schedules.timer`: the small timer by which workers fire due slots.
"""

from pmsq.schedules.schedule import Schedule

__all__ = ["Schedule"]
