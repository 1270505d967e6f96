"""A TCP proxy that delays every chunk by a fixed time each way: a database on its own host,
for benchmarks on one machine (`bench/concurrency.py --latency-ms`).

Each direction of each connection is a queue of (deliver at, bytes): a chunk is read at once
and written `delay` later, in order, so the link adds latency without limiting throughput
(pipelined messages stay pipelined). It runs its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay_s, data))
            if not data:
                break
    except OSError:
        await queue.put((0.0, b""))
    await sender


class LatencyProxy:
    """`127.0.0.1:<port>` forwards to `host:port` with `delay_ms` added each way (a round trip
    costs twice that)."""

    def __init__(self, host: str, port: int, delay_ms: float) -> None:
        self.upstream = (host, port)
        self.delay_s = delay_ms / 1000
        self.port = 0
        self._server: asyncio.Server
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                writer.close()
                return
            await asyncio.gather(
                _pump(reader, up_writer, self.delay_s), _pump(up_reader, writer, self.delay_s)
            )

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(handle, "127.0.0.1", 0)

        server = self._server = self._loop.run_until_complete(serve())
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Close the listener and every connection through it, then end the loop."""

        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@contextlib.contextmanager
def behind_latency(database_url: str, delay_ms: float) -> Iterator[str]:
    """`database_url` rewritten to reach its server through a `LatencyProxy` (unchanged when
    `delay_ms` is 0 or the URL is not a PostgreSQL server's)."""
    parts = urlsplit(database_url)
    if delay_ms <= 0 or parts.scheme not in ("postgres", "postgresql"):
        yield database_url
        return
    proxy = LatencyProxy(parts.hostname or "127.0.0.1", parts.port or 5432, delay_ms).start()
    try:
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        yield urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{proxy.port}"))
    finally:
        proxy.stop()
