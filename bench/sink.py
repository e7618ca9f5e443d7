"""A receiver that costs next to nothing: ``200 {"success": true}`` to every POST.

    python bench/sink.py --port 8099

For ``bench/delivery.py capacity --sink``: the mock receiver (DRF, a database row per event)
is the limit of a raw-capacity run on two cores, so this measures what the senders can do. It
keeps, in memory, each POST's ``Idempotency-Key`` and arrival time; ``GET /keys`` answers them
as JSON (``[[key, time], ...]``) so the benchmark can count what was lost or sent twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

ANSWER = b'{"success": true}'
received: list[tuple[str, float]] = []


def response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "POST":
                received.append((headers.get("idempotency-key", ""), time.time()))
                writer.write(response("200 OK", ANSWER))
            else:
                writer.write(response("200 OK", json.dumps(received).encode()))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
