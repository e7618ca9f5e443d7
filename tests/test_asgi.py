"""An async view under a real ASGI server (uvicorn), delivered by a real worker."""

import pytest
import requests
from asgiref.sync import async_to_sync

from django_supalytics.models import OutboxEvent
from tests.processes import (
    ChildProcess,
    free_port,
    start_server_process,
    start_worker_process,
    wait_for,
)

pytestmark = pytest.mark.slow


def start_asgi_server(port: int) -> ChildProcess:
    argv = ["-m", "uvicorn", "testproject.asgi:application", "--port", str(port), "--lifespan=off"]
    return start_server_process(argv, port)


def test_atrack_in_an_async_view_is_delivered_and_a_rolled_back_one_is_not(
    supalytics_receiver, processes
):
    processes.append(start_worker_process(supalytics_receiver.url))
    port = free_port()
    processes.append(start_asgi_server(port))
    url = f"http://127.0.0.1:{port}/async/upgrade/"
    headers = {"X-Supalytics-Visitor-Id": "asgi-visitor"}

    declined = requests.post(url, data={"fail": "1"}, headers=headers, timeout=10)
    assert declined.status_code == 402
    answer = requests.post(url, data={"plan": "team"}, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["visitor_id"] == "asgi-visitor"

    wait_for(lambda: supalytics_receiver.events().exists(), timeout=60)
    received = supalytics_receiver.events().get()
    assert (received.name, received.visitor_id) == ("upgraded_async", "asgi-visitor")
    assert received.idempotency_key == answer.json()["event"]
    assert received.metadata == {"plan": "team"}
    assert list(OutboxEvent.objects.values_list("name", flat=True)) == ["upgraded_async"]


@pytest.mark.django_db(transaction=True)
def test_atrack_from_async_code_takes_the_same_arguments():
    from django_supalytics import InvalidEvent, atrack

    async def main():
        event = await atrack("async_signup", visitor_id="v-async", metadata={"n": 1})
        with pytest.raises(InvalidEvent) as raised:
            await atrack("Bad Name")
        return event, raised.value

    event, error = async_to_sync(main)()
    assert (event.name, event.visitor_id, event.metadata) == ("async_signup", "v-async", {"n": 1})
    assert OutboxEvent.objects.filter(pk=event.pk).exists()
    assert error.field == "name"
