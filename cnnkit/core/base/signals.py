"""Stop signals as requests: SIGTERM (what schedulers and ``timeout`` send) and SIGINT (Ctrl-C) ask a
long loop (training, a video) to stop at its next safe point instead of ending the process mid-write."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator


class StopRequest:
    """The signal that asked for a stop, once one came (``signum``)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGTERM).name


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """While the block runs, SIGTERM or SIGINT set ``request.signum`` instead of ending the process; a
    second Ctrl-C interrupts at once (KeyboardInterrupt). Outside the main thread nothing is installed."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def ask(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and request.signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signum = signum

    previous = {s: signal.signal(s, ask) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
