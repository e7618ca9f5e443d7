"""Test settings with dj-stripe, for tests/test_contrib_djstripe.py in a pytest session of its own.

dj-stripe brings ~60 tables whose migrations and flushes the rest of the suite does not need;
``make test`` runs this session after the main one (its tables are made from the models, not
by migrations: ``django_db_use_migrations`` in tests/conftest.py)::

    pytest --ds=tests.settings_djstripe tests/test_contrib_djstripe.py

Without dj-stripe (Python 3.10 cannot install it) the apps are left out and the tests skip.
"""

import importlib.util

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, INSTALLED_APPS, POSTGRES_URL, RUN_DIR

if importlib.util.find_spec("djstripe") is not None:
    INSTALLED_APPS = [*INSTALLED_APPS, "djstripe", "django_supalytics.contrib.djstripe"]
    STRIPE_LIVE_MODE = False
    STRIPE_TEST_SECRET_KEY = "sk_test_supalytics0000000000000000"
    DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
    DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"

# The default database only (the other aliases are for the main session's tests: here even
# Django's model checks would open them), with a test database of its own, so that this
# session and the main one can run side by side.
DATABASES = {"default": DATABASES["default"]}
DATABASES["default"]["TEST"] = {
    "NAME": f"test_{DATABASES['default']['NAME']}_djstripe"
    if POSTGRES_URL
    else str(RUN_DIR / "test-djstripe.sqlite3")
}
