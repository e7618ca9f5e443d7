"""System checks: one stable ID for each way to misconfigure the app (``docs/settings.md``).

``configuration`` checks the ``SUPALYTICS`` setting (``caches``: the cache that holds the
shared limiter); ``project`` the databases, user model and middleware around it. Importing
this package registers them all.
"""

from .configuration import (
    check_delivery_backend,
    check_endpoint_security,
    check_settings,
)
from .project import (
    check_middleware,
    check_skip_locked,
    check_sqlite_transactions,
    sensitive_field,
)

__all__ = [
    "check_delivery_backend",
    "check_endpoint_security",
    "check_middleware",
    "check_settings",
    "check_skip_locked",
    "check_sqlite_transactions",
    "sensitive_field",
]
