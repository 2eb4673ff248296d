"""What the SQL backends share: semantics in plain functions, never SQL.

The SQLite backend (``pmsq.backends.sqlite``) and the PostgreSQL plugin
(``pmsq_postgres``) store the same rows with the same meaning; each keeps
its own SQL dialect, and both call this kit for the parts that do not
depend on it:

- ``states``: the message states, named once.
- ``rows``: stored rows to values (envelopes, dead letters, exports).
- ``metrics``: the buffered outcome counters and handler-time histogram.
- ``stats``: folding counted rows into a ``Stats`` snapshot.
- ``rotation``: the tenant rotation and priority pick of a claim, with
  its rate-limit budget.
- ``deadletter``: what a dead letter's fallback copy looks like.
- ``settlements``: splitting a batch of settlements by action.
- ``quotas``: when a put is refused for ``max_depth`` or ``tenant_quota``.
"""
