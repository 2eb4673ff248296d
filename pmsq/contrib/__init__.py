"""Optional integrations, each behind an extra (``pip install 'pmsq[otel]'``).

``import pmsq`` imports none of them.
"""
