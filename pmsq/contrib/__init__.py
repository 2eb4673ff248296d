"""Optional integrations, each behind an extra (``pip install '.[otel]'`` in a pmsq checkout).

``import pmsq`` imports none of them.
"""
