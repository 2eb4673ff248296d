"""The operator's view: ``Stats`` snapshots turned into figures, rich renderables,
plain text and Prometheus text, and the live loop of ``pmsq monitor``.

Modules: ``figures`` (pure arithmetic: rates between snapshots, sparklines,
formatting; no rich), ``render`` (rich renderables), ``prometheus`` (text
exposition format), ``live`` (the refresh loop). Rendering never reads the
store: it takes snapshots, so it is tested with fixed ``Stats`` values.
"""
