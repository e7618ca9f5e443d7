"""A threaded WSGI server for the receiver: Django's own, with Nagle's algorithm off.

Django's development server writes headers and body separately; with Nagle on, each answer on
a keep-alive connection waits for the client's delayed ACK (about 40 ms). Turning it off lets
one process answer hundreds of requests a second, which rate-limit tests need.

Django's server also reads whatever body the application left unread, in one ``read()``, to
keep the connection usable: a 64 MiB body refused with 413 would still be read into memory.
Here an unread rest over ``DRAIN_MAX_BYTES`` is not read at all (the connection is closed
instead), and a smaller one is read in chunks.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from typing import Any
from wsgiref import simple_server

from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ServerHandler, ThreadedWSGIServer, WSGIRequestHandler
from django.http import HttpRequest, HttpResponseBase
from django.test.testcases import LiveServerThread, QuietWSGIRequestHandler

from .bounds import CONNECTION_TIMEOUT, MAX_CONNECTIONS

RECEIVER_URLCONF = "django_supalytics.receiver.urls"

#: The most of an unread request body read (and dropped) to keep a connection open.
DRAIN_MAX_BYTES = 64 * 1024
_CHUNK = 16 * 1024


def is_loopback(host: str) -> bool:
    """True for an address or name that only this machine can reach."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _unread(stream: Any) -> int:
    return max(0, int(getattr(stream, "limit", 0)) - int(getattr(stream, "_pos", 0)))


class BoundedServerHandler(ServerHandler):
    """Django's handler, without reading a large unread body into memory."""

    request_handler: Any
    headers: Any

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        if _unread(self.get_stdin()) > DRAIN_MAX_BYTES:
            self.headers["Connection"] = "close"
            self.request_handler.close_connection = True

    def close(self) -> None:
        stream = self.get_stdin()
        if _unread(stream) > DRAIN_MAX_BYTES:
            self.request_handler.close_connection = True
        else:
            while stream.read(_CHUNK):
                pass
        simple_server.ServerHandler.close(self)


class _BoundedRequests:
    """``handle_one_request`` of Django's handler, with ``BoundedServerHandler``; a connection
    silent for the server's ``connection_timeout`` is closed, quietly."""

    def handle_one_request(self: Any) -> None:
        try:
            self._handle_one_request()
        except TimeoutError:
            self.close_connection = True

    def _handle_one_request(self: Any) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = BoundedServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ()
        )
        handler.request_handler = self
        handler.run(self.server.get_app())


class ReceiverRequestHandler(_BoundedRequests, WSGIRequestHandler):
    pass


class QuietReceiverRequestHandler(_BoundedRequests, QuietWSGIRequestHandler):
    pass


_BUSY_BODY = (
    b'{"success": false, "error": {"code": "unavailable", '
    b'"message": "too many open connections; try again"}}'
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)


class ReceiverServer(ThreadedWSGIServer):
    """Django's threaded server, with at most ``max_connections`` handler threads (a
    connection beyond them gets a 503 and is closed) and a per-connection socket timeout."""

    #: Several processes may listen on one port; the kernel spreads connections among them.
    reuse_port = False
    #: Seconds a connection may stay silent (between requests or within one) before it closes.
    connection_timeout: float | None = CONNECTION_TIMEOUT
    #: Connections served at once, one thread each.
    max_connections = MAX_CONNECTIONS
    #: The listen backlog (Django's is 10): a burst of new connections beyond it waits for the
    #: client's SYN retransmit, a second or more, before it is even accepted.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def serve_forever(self, poll_interval: float = 0.05) -> None:
        # socketserver's default (0.5 s) is how long shutdown() waits: a test's receiver would
        # take that long to stop after every test.
        super().serve_forever(poll_interval)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.connection_timeout)
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

    def _create_server(self, connections_override: Any = None) -> Any:
        return self.server_class(
            (self.host, self.port),
            QuietReceiverRequestHandler,
            allow_reuse_address=False,
            connections_override=connections_override,
        )


def serve(
    host: str,
    port: int,
    *,
    quiet: bool = True,
    reuse_port: bool = False,
    max_connections: int = ReceiverServer.max_connections,
    connection_timeout: float | None = ReceiverServer.connection_timeout,
) -> None:
    """Serve the project's WSGI application until interrupted."""
    from django.core.servers.basehttp import get_internal_wsgi_application

    handler = QuietReceiverRequestHandler if quiet else ReceiverRequestHandler
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type(
        "Server",
        (ReceiverServer,),
        {
            "address_family": family,
            "reuse_port": reuse_port,
            "max_connections": max_connections,
            "connection_timeout": connection_timeout,
        },
    )
    httpd = server_class((host, port), handler, allow_reuse_address=True)
    httpd.set_app(get_internal_wsgi_application())
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
