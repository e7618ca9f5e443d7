"""A TCP proxy that puts a wide-area network between two loopback ends.

Every chunk read on one side is written to the other ``--rtt``/2 seconds later, give or take
``--jitter`` (uniform), with the order of each connection's bytes kept (a chunk never overtakes
the one before it, as on TCP). Used by ``bench/delivery.py wan`` and its test:

    python -m tests.wanproxy --port 8001 --target 127.0.0.1:8000 --rtt 0.04 --jitter 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import random


async def _carry(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    jitter: float,
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` ± ``jitter`` seconds late."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                break
            writer.write(data)
            await writer.drain()

    delivering = asyncio.ensure_future(deliver())
    last = 0.0
    try:
        while True:
            data = await reader.read(65536)
            last = max(last, loop.time() + max(0.0, delay + random.uniform(-jitter, jitter)))
            queue.put_nowait((last, data))
            if not data:
                break
        await delivering
    except (ConnectionError, asyncio.CancelledError):
        delivering.cancel()
    finally:
        writer.close()


async def serve(port: int, host: str, target_port: int, rtt: float, jitter: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _carry(client_r, server_w, rtt / 2, jitter),
            _carry(server_r, client_w, rtt / 2, jitter),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="loopback port to listen on")
    parser.add_argument("--target", required=True, help="host:port to forward to (loopback)")
    parser.add_argument("--rtt", type=float, default=0.04, help="round trip added, seconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="± seconds on each way")
    args = parser.parse_args()
    host, _, target_port = args.target.rpartition(":")
    asyncio.run(serve(args.port, host, int(target_port), args.rtt, args.jitter))


if __name__ == "__main__":
    main()
