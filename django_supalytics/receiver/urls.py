from __future__ import annotations

from django.urls import path

from . import control, views

app_name = "supalytics_receiver"

urlpatterns = [
    path("v1/events", views.EventsView.as_view(), name="events"),
    path("v1/_control/faults", control.FaultsView.as_view(), name="control-faults"),
    path("v1/_control/reset", control.ResetView.as_view(), name="control-reset"),
    path("v1/_control/events", control.ReceivedView.as_view(), name="control-events"),
    path("v1/_control/stats", control.StatsView.as_view(), name="control-stats"),
    path("v1/openapi.json", views.OpenAPIView.as_view(), name="openapi"),
]
