"""A TCP proxy to the database that can be black-holed, for bench/faults.py.

It runs in a thread of its own with its own event loop, so whatever the harness does meanwhile (a
blocking wait, a slow check) never stalls the traffic it forwards. Black-holed, it behaves like a
firewall that drops every packet: no byte goes either way and a new connection is accepted but never
answered; nothing is lost or reordered, it is only held. Restored, the held bytes flow again, as TCP's
retransmissions would deliver them once the route is back; a client that gave up meanwhile has closed
its end, and the proxy then closes the other.

(`tests/fixtures/servers.py`'s SilenceableProxy drops the bytes instead and has no way back: right for a
test that only needs the silence, not for measuring a recovery.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType


class BlackHoleProxy:
    """``with BlackHoleProxy(5432) as proxy:`` listens on ``proxy.port``; :meth:`black_hole` and
    :meth:`restore` switch it; leaving the block closes every connection."""

    def __init__(self, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_port = target_port
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faults-proxy", daemon=True)
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    # ---- switching (from the harness's thread) -------------------------------------------------------

    def black_hole(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    # ---- the proxy (on its own loop) -----------------------------------------------------------------

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._open.wait()  # bytes read just as the hole opened are held, not sent
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._open.wait()  # black-holed: accepted, never answered
            try:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
            except OSError:
                return
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            self._writers.discard(up_writer)
        finally:
            writer.close()
            self._writers.discard(writer)

    async def _start(self) -> int:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._open.set()  # wake every pump so that it sees its closed socket and ends
        await asyncio.sleep(0.05)
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> BlackHoleProxy:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
