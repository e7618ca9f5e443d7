"""The middleware checks: W006 (no VisitorIdMiddleware), W007 (no AuthenticationMiddleware),
E010 (VisitorIdMiddleware before it)."""

from django.core.checks import run_checks

OURS = "django_supalytics.middleware.VisitorIdMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


def ids() -> set[str]:
    """The middleware checks' IDs that ``manage.py check`` would show (silenced ones left out)."""
    wanted = {"supalytics.W006", "supalytics.W007", "supalytics.E010"}
    return {m.id for m in run_checks() if m.id in wanted and not m.is_silenced()}


def test_w006_a_missing_visitor_id_middleware_is_not_silent(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != OURS]
    assert "supalytics.W006" in ids()


def test_w006_silenced_for_sites_that_pass_visitor_ids_themselves(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != OURS]
    settings.SILENCED_SYSTEM_CHECKS = ["supalytics.W006"]
    assert "supalytics.W006" not in ids()


def test_w007_without_authentication_middleware(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != AUTH]
    assert "supalytics.W007" in ids()


def test_a_subclass_of_either_counts(settings):
    settings.MIDDLEWARE = [
        "tests.test_checks_middleware.MyAuth" if m == AUTH else m for m in settings.MIDDLEWARE
    ]
    settings.MIDDLEWARE = [
        "tests.test_checks_middleware.MyVisitorId" if m == OURS else m for m in settings.MIDDLEWARE
    ]
    assert not ids()


def test_the_settings_of_the_test_suite_are_clean():
    assert not ids()


from django.contrib.auth.middleware import AuthenticationMiddleware  # noqa: E402

from django_supalytics.middleware import VisitorIdMiddleware  # noqa: E402


class MyAuth(AuthenticationMiddleware):
    pass


class MyVisitorId(VisitorIdMiddleware):
    pass
