from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from testproject.shop import views

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("plan/", views.change_plan, name="change-plan"),
    path("cancel/", views.cancel, name="cancel"),
    path("webhooks/payment/", views.payment_webhook, name="payment-webhook"),
    path("async/upgrade/", views.async_upgrade, name="async-upgrade"),
    path("admin/", admin.site.urls),
    # health/ and metrics/ (docs/operations.md#health-and-metrics).
    path("supalytics/", include("django_supalytics.urls")),
    # The mock Supalytics API: the site is its own receiver in development.
    path("", include("django_supalytics.receiver.urls")),
]
