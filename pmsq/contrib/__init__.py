"""Optional integrations, each behind an extra (``pip install '.[otel]'`` in a pmsq checkout).

``otel`` (OpenTelemetry spans), ``django`` (an installed app: settings,
``manage.py pmsq_worker``, a Django Tasks backend; ``pmsq[django]``) and
``asgi`` (a FastAPI/Starlette lifespan running an ``AsyncWorker``; no extra).
``import pmsq`` imports none of them.
"""
