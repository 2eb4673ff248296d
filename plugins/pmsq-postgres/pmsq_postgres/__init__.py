"""pmsq-postgres: the PostgreSQL backend for pmsq.

``pmsq.connect("postgresql://user@host:5432/db?schema=pmsq")`` opens it; the
package registers the ``postgresql`` and ``postgres`` URL schemes under the
``pmsq.backends`` entry-point group, so nothing needs importing by hand.
"""

from pmsq_postgres.backend import PostgresBackend
from pmsq_postgres.url import PostgresURL, parse_url, redact

__version__ = "0.1.0"

__all__ = ["PostgresBackend", "PostgresURL", "__version__", "parse_url", "redact"]
