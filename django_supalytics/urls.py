"""``path("supalytics/", include("django_supalytics.urls"))``: ``health/`` and ``metrics/``."""

from django.urls import path

from . import views

app_name = "supalytics"
urlpatterns = [
    path("health/", views.health, name="health"),
    path("metrics/", views.metrics, name="metrics"),
]
