import json
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from django_supalytics import link_visitor, track
from django_supalytics.validation import is_valid_visitor_id

from .models import PLANS, Subscription


def home(request: HttpRequest) -> HttpResponse:
    subscription = None
    if request.user.is_authenticated:
        subscription = Subscription.objects.filter(user=request.user).order_by("-id").first()
    return render(request, "shop/home.html", {"subscription": subscription, "plans": PLANS})


def link_posted_visitor_id(request: HttpRequest, user: Any) -> None:
    """Privacy mode has no cookie, and a form post carries no header: the page copies
    window.supalytics.visitorId into a hidden field, and the view links it."""
    posted = request.POST.get("supalytics_visitor_id", "")
    if posted and is_valid_visitor_id(posted):
        link_visitor(user, posted)


def signup(request: HttpRequest) -> HttpResponse:
    form: UserCreationForm[Any] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            # Logging in links the request's visitor ID (cookie or header) to the new user.
            login(request, user)
            link_posted_visitor_id(request, user)
            track("signed_up", request=request)
        return redirect("home")
    return render(request, "shop/signup.html", {"form": form})


class LoginView(auth_views.LoginView):
    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        link_posted_visitor_id(self.request, form.get_user())
        return response


@login_required
@require_POST
def change_plan(request: HttpRequest) -> HttpResponse:
    plan = request.POST.get("plan", "")
    if plan not in PLANS:
        return HttpResponseBadRequest("unknown plan")
    with transaction.atomic():
        sub = (
            Subscription.objects.select_for_update()
            .filter(user=request.user, status="active")
            .first()
        )
        if sub is None:
            Subscription.objects.create(user=request.user, plan=plan, amount=PLANS[plan])
        else:
            sub.plan, sub.amount = plan, PLANS[plan]
            sub.save()
        if request.POST.get("fail"):
            # The payment provider said no: the change and its event roll back together.
            transaction.set_rollback(True)
            return HttpResponse("payment declined; nothing changed", status=402)
    return redirect("home")


@login_required
@require_POST
def cancel(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        for sub in Subscription.objects.select_for_update().filter(
            user=request.user, status="active"
        ):
            sub.status = "cancelled"
            sub.save()
    return redirect("home")


@csrf_exempt
@require_POST
def payment_webhook(request: HttpRequest) -> HttpResponse:
    """A payment provider's webhook: no browser, so no visitor ID unless the payload has one."""
    try:
        payload = json.loads(request.body)
    except ValueError:
        return HttpResponseBadRequest("not JSON")
    if not isinstance(payload, dict):
        return HttpResponseBadRequest("not a JSON object")
    metadata = {"amount": payload.get("amount", 0), "currency": payload.get("currency", "USD")}
    extra = payload.get("metadata")
    visitor_id = extra.get("supalytics_visitor_id") if isinstance(extra, dict) else None
    track("payment_succeeded", visitor_id=visitor_id, metadata=metadata)
    return JsonResponse({"received": True})


def _declined_upgrade(request: HttpRequest) -> None:
    """A unit of work that fails: its event goes with it. Async code has no transactions, so
    the whole unit runs as one sync function."""
    with transaction.atomic():
        track("upgrade_declined_async", request=request)
        raise PaymentDeclined


class PaymentDeclined(Exception):
    pass


@csrf_exempt
@require_POST
async def async_upgrade(request: HttpRequest) -> HttpResponse:
    """An async view: ``request.supalytics.atrack`` records the event without blocking the
    event loop; a declined payment rolls its event back."""
    if request.POST.get("fail"):
        try:
            await sync_to_async(_declined_upgrade)(request)
        except PaymentDeclined:
            return HttpResponse("declined", status=402)
    event = await request.supalytics.atrack(  # type: ignore[attr-defined]
        "upgraded_async", metadata={"plan": request.POST.get("plan", "pro")}
    )
    return JsonResponse({"event": str(event.uuid), "visitor_id": event.visitor_id})
