"""A scripted HTTP server on a loopback socket, for tests of the client side."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DROP = "drop"
#: A body that never ends: a huge Content-Length, written until the client goes (or 20 s).
ENDLESS = "endless"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: The client's port: one per connection.
    port: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"success": True})
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds the server takes before it answers (a slow API).
    delay: float = 0.0
    #: Seconds between bytes of the status line and headers (a trickling API)...
    trickle_head: float = 0.0
    #: ... and of the body.
    trickle_body: float = 0.0


def _trickle(out: Any, data: bytes, gap: float) -> None:
    if not gap:
        out.write(data)
        return
    for i in range(len(data)):
        out.write(data[i : i + 1])
        out.flush()
        time.sleep(gap)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its read timeout) closed the socket: nothing to report.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ScriptedServer:
    """Answers each request with the next scripted answer (``DROP`` closes the socket), then 200."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: list[Answer | str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                # The vendor's read API on the same path: it answers 200, as a POST would.
                self.do_POST()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with server._lock:
                    server.requests.append(
                        Received(
                            self.command,
                            self.path,
                            dict(self.headers.items()),
                            body,
                            self.client_address[1],
                        )
                    )
                    answer = server._script.pop(0) if server._script else Answer()
                if answer == DROP:
                    self.close_connection = True
                    self.connection.close()
                    return
                assert isinstance(answer, Answer)
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.trickle_head or answer.trickle_body or answer.body == ENDLESS:
                    self._write_by_hand(answer)
                    return
                body = answer.body
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _write_by_hand(self, answer: Answer) -> None:
                self.close_connection = True
                endless = answer.body == ENDLESS
                payload = b"" if endless else json.dumps(answer.body).encode()
                length = 1 << 40 if endless else len(payload)
                lines = [
                    f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}",
                    "Content-Type: application/json",
                    f"Content-Length: {length}",
                    *(f"{name}: {value}" for name, value in answer.headers.items()),
                ]
                head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                _trickle(self.wfile, head, answer.trickle_head)
                if endless:
                    until = time.monotonic() + 20
                    while time.monotonic() < until:  # until the client hangs up
                        self.wfile.write(b"x" * 65536)
                else:
                    _trickle(self.wfile, payload, answer.trickle_body)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/events"
        # A short poll: shutdown() waits for it, at the end of every test.
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *answers: Answer | str) -> None:
        with self._lock:
            self._script.extend(answers)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
