from celery import shared_task
from django.contrib.auth import get_user_model

from django_supalytics import track


@shared_task
def daily_report() -> int:
    """A backend-only event with no visitor (the vendor's "Option 3")."""
    recipients = get_user_model().objects.filter(is_active=True).count()
    track("daily_report_sent", metadata={"recipients": recipients})
    return recipients
