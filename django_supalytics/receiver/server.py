"""A threaded WSGI server for the receiver: Django's own, with Nagle's algorithm off.

Django's development server writes headers and body separately; with Nagle on, each answer on
a keep-alive connection waits for the client's delayed ACK (about 40 ms). Turning it off lets
one process answer hundreds of requests a second, which rate-limit tests need.
"""

from __future__ import annotations

import socket
from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.http import HttpRequest, HttpResponseBase
from django.test.testcases import LiveServerThread, QuietWSGIRequestHandler

RECEIVER_URLCONF = "django_supalytics.receiver.urls"


class ReceiverServer(ThreadedWSGIServer):
    #: Several processes may listen on one port; the kernel spreads connections among them.
    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


class ReceiverHandler(WSGIHandler):
    """The project's WSGI application, routed to the receiver's urls only.

    It takes (and ignores) the application ``LiveServerThread`` hands a static-files handler.
    """

    def __init__(self, application: Any = None) -> None:
        super().__init__()

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        request.urlconf = RECEIVER_URLCONF
        return super().get_response(request)


class ReceiverThread(LiveServerThread):
    """A receiver in a thread of this process (what ``supalytics_receiver`` uses)."""

    server_class = ReceiverServer


def serve(host: str, port: int, *, quiet: bool = True, reuse_port: bool = False) -> None:
    """Serve the project's WSGI application until interrupted."""
    from django.core.servers.basehttp import get_internal_wsgi_application

    handler = QuietWSGIRequestHandler if quiet else WSGIRequestHandler
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type(
        "Server", (ReceiverServer,), {"address_family": family, "reuse_port": reuse_port}
    )
    httpd = server_class((host, port), handler, allow_reuse_address=True)
    httpd.set_app(get_internal_wsgi_application())
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
