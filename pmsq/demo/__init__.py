"""``pmsq demo``: a property-management day on an embedded store, checked at the end.

Modules: ``model`` (pure: the events, the calendar they build, the recorded
history and ``verify``), ``scenario`` (the day's event stream), ``app`` (the
broker, handlers with injected failures, the publisher, the run), ``report``
(the verification as a rich table).
"""
