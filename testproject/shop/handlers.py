"""Subscription changes become Supalytics events, in the same transaction as the change."""

from typing import Any

from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from django_supalytics import track

from .models import Subscription


@receiver(pre_save, sender=Subscription)
def remember_previous(sender: Any, instance: Subscription, **kwargs: Any) -> None:
    instance._previous = (  # type: ignore[attr-defined]
        Subscription.objects.filter(pk=instance.pk).values("plan", "amount", "status").first()
        if instance.pk
        else None
    )


@receiver(post_save, sender=Subscription)
def track_subscription(sender: Any, instance: Subscription, created: bool, **kwargs: Any) -> None:
    metadata = {
        "plan": instance.plan,
        "amount": float(instance.amount),
        "currency": instance.currency,
    }
    previous = getattr(instance, "_previous", None)
    if created:
        track("subscription_created", user=instance.user, metadata=metadata)
    elif previous and previous["status"] != instance.status and instance.status == "cancelled":
        track("subscription_cancelled", user=instance.user, metadata=metadata)
    elif previous and previous["plan"] != instance.plan:
        name = (
            "subscription_upgraded"
            if instance.amount > previous["amount"]
            else "subscription_downgraded"
        )
        track(name, user=instance.user, metadata={**metadata, "previous_plan": previous["plan"]})
