"""dj-stripe's webhook signals as Supalytics events (``docs/djstripe.md``).

Add ``"django_supalytics.contrib.djstripe"`` to ``INSTALLED_APPS`` after ``"djstripe"``; install
with ``pip install "django-supalytics[djstripe]"``.
"""
