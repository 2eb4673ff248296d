"""Optional integrations, each behind an extra (``pip install 'pmsq[otel]'``).

``otel`` (OpenTelemetry spans), ``django`` (an installed app: settings,
``manage.py pmsq_worker``, a Django Tasks backend; ``pmsq[django]``) and
``asgi`` (a FastAPI/Starlette lifespan running an ``AsyncWorker``; no extra).
``import pmsq`` imports none of them.
"""
