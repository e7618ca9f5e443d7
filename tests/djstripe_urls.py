"""dj-stripe's webhook view, for tests/test_contrib_djstripe.py."""

from django.urls import include, path

urlpatterns = [path("stripe/", include("djstripe.urls", namespace="djstripe"))]
