"""Stop on SIGTERM / SIGINT: a context manager that installs handlers and restores the previous ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop(callback: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Call `callback(signal)` in the running loop on each SIGTERM/SIGINT while inside the block."""
    loop = asyncio.get_running_loop()
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        log.info("worker.signal", extra={"signal": sig.name})
        loop.call_soon_threadsafe(callback, sig)

    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
    except ValueError:  # not the main thread: nothing to install (tests running the loop elsewhere)
        previous.clear()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
